"""safehold.api."""
