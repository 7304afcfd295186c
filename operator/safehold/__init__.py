"""Safehold: database backups for Kubernetes.

Two planes share this package and meet only in :mod:`safehold.api`:

* the data plane (``safehold`` CLI / runner image): engines, storage, codecs, repository, pipeline;
* the control plane (``safehold-operator``): :mod:`safehold.controller`.
"""

__version__ = "0.1.0"
