"""Storage backends behind one Protocol, opened by repository URL (``open_storage``).

Backends register their URL scheme on import; ``file://`` is always available.
"""

from safehold.storage.base import (
    ConditionFailed,
    NoSpaceError,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageAuthError,
    StorageError,
    StorageFactory,
    TransientStorageError,
    open_storage,
    register,
)

__all__ = [
    "ConditionFailed",
    "NoSpaceError",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageAuthError",
    "StorageError",
    "StorageFactory",
    "TransientStorageError",
    "open_storage",
    "register",
]
