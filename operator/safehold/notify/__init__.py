"""Notifications, shared by both planes (the operator and the standalone runner).

No Kubernetes imports here: the operator reads the webhook URL from a Secret and hands it in.
"""
