"""Storage backends behind one Protocol, opened by repository URL (``open_storage``).

Backends register their URL scheme on import; ``file://`` is always available.
"""

from safehold.storage.base import (
    NoSpaceError,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    StorageFactory,
    TransientStorageError,
    open_storage,
    register,
)

__all__ = [
    "NoSpaceError",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "StorageFactory",
    "TransientStorageError",
    "open_storage",
    "register",
]
