"""Pure manifest builders: ``(model, settings) -> dict``; golden-file tested."""
