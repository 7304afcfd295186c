"""safehold.engines."""
