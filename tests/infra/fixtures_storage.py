"""Fixtures: storage (placeholder until the area lands)."""
