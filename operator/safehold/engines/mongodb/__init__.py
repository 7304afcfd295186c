"""MongoDB engine: ``mongodb://`` and ``mongodb+srv://`` targets (see :mod:`.engine`)."""

from safehold.engines.base import register
from safehold.engines.mongodb.engine import MongoEngine

for _scheme in ("mongodb", "mongodb+srv"):
    register(_scheme, MongoEngine.from_url)

__all__ = ["MongoEngine"]
