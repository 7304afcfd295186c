"""Whole-system tests: the sample manifests of docs/examples applied to a real cluster."""
