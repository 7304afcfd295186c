"""safehold.controller."""
