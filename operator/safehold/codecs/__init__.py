"""safehold.codecs."""
