"""The runner ServiceAccount: one per namespace, no API permissions, no mounted token.

No Role or RoleBinding is ever created for it, so it can do nothing against the API server;
``automountServiceAccountToken: false`` keeps even the token out of the pods.
"""

from __future__ import annotations

from typing import Any

from safehold.controller import naming


def runner_service_account(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                naming.MANAGED_BY: naming.OPERATOR,
                naming.COMPONENT: "runner",
            },
            "annotations": {
                f"{naming.GROUP}/note": "Safehold runner Jobs; deliberately bound to no Role",
            },
        },
        "automountServiceAccountToken": False,
    }
