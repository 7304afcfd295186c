"""Per-chunk transforms of the streaming pipeline: compression, then encryption.

``compression`` turns a raw chunk into one standard-format frame (gzip, bzip2, lz4, zstd or none)
and back; ``crypto`` holds the AES-256-GCM envelope (KEKs, wrapped data keys, the chunk cipher,
the manifest MAC); ``frames`` lays the resulting chunks out inside a stored object. They are pure
functions on bytes, safe to call from the pipeline's thread pool; storage and I/O live elsewhere.
"""
