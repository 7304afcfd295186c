"""kopf handlers (thin: parse the body, call pure logic and builders, patch status via kube)."""
