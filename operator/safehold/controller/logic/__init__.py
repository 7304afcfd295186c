"""Pure decisions: no I/O, no kopf, no clients; unit-tested with plain dicts."""
