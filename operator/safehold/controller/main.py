"""Entry point of ``safehold-operator``: runs the kopf operator on Safehold's handlers.

The namespaces come from ``SAFEHOLD_NAMESPACES`` (settings.py): one, a list, or all.
"""

from __future__ import annotations

import sys

from safehold.controller.settings import Settings, SettingsError


def kopf_args(settings: Settings) -> list[str]:
    args = ["run", "--standalone", "-m", "safehold.controller.handlers"]
    if settings.clusterwide:
        return [*args, "--all-namespaces"]
    return [*args, *(f"--namespace={ns}" for ns in settings.namespaces)]


def main() -> None:
    import kopf.cli

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"safehold-operator: {exc}")
    sys.exit(kopf.cli.main([*kopf_args(settings), *sys.argv[1:]]))
