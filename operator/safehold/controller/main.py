"""Entry point of ``safehold-operator``: runs the kopf operator on Safehold's handlers."""

from __future__ import annotations

import sys


def main() -> None:
    import kopf.cli

    sys.exit(
        kopf.cli.main(["run", "--standalone", "-m", "safehold.controller.handlers", *sys.argv[1:]])
    )
