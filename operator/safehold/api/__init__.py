"""The contract between the planes: task, result, manifest and custom-resource models.

Pure pydantic; imports neither kopf/kubernetes nor any database driver or storage SDK, nor any
other part of safehold (import-linter enforces both).

- ``common``: base model (camelCase JSON), conditions, secret references, runner overrides
- ``target``, ``backup``, ``restore``, ``schedule``: one module per kind (spec, status, and the
  status transitions as pure methods)
- ``task``: what a runner Job executes; ``result``: what it reports (the termination message)
- ``manifest``, ``retention``, ``errors``: the repository's manifest, retention policy, and the
  error taxonomy shared by both planes
- ``crdgen``: generates ``crds/`` from these models (``make crds``)
"""
