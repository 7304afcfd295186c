"""safehold.storage."""
