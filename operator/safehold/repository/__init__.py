"""safehold.repository."""
