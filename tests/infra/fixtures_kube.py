"""Fixtures: kube (placeholder until the area lands)."""
