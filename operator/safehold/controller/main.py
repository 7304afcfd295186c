"""Entry point of ``safehold-operator``: runs the kopf operator on Safehold's handlers.

The namespaces come from ``SAFEHOLD_NAMESPACES`` (settings.py): one, a list, or all.
"""

from __future__ import annotations

import sys

from safehold.controller.settings import Settings, SettingsError

SCOPE_FLAGS = ("--namespace", "-n", "--all-namespaces", "-A")


def kopf_args(settings: Settings, extra: list[str] | None = None) -> list[str]:
    """kopf's command line; namespace flags given on the command line (the Helm chart passes
    them) win over ``SAFEHOLD_NAMESPACES``."""
    extra = extra or []
    args = ["run", "--standalone", "-m", "safehold.controller.handlers"]
    if any(a.split("=", 1)[0] in SCOPE_FLAGS for a in extra):
        return [*args, *extra]
    if settings.clusterwide:
        return [*args, "--all-namespaces", *extra]
    return [*args, *(f"--namespace={ns}" for ns in settings.namespaces), *extra]


def main() -> None:
    import kopf.cli

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"safehold-operator: {exc}")
    sys.exit(kopf.cli.main(kopf_args(settings, sys.argv[1:])))
