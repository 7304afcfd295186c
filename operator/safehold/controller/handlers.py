"""kopf handlers for Safehold's custom resources (thin: parse, decide, patch status)."""
