"""The contract between the planes: task, result, manifest and custom-resource models.

Pure pydantic; imports neither kopf/kubernetes nor any database driver or storage SDK.
"""
