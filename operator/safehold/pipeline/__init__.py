"""The streaming data plane: engine -> chunk -> compress -> encrypt -> storage, and back."""
