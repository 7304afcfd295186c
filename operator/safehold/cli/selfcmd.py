"""The command that runs this very Safehold, for the places where the CLI starts itself.

The daemon runs each backup and prune as a child `safehold` process, and a data-directory
restore writes `safehold wal fetch` into PostgreSQL's restore_command. Installed from the
package, that command is this interpreter with ``-m safehold.cli``; in the one-file executable
(PyInstaller, scripts/build-exe.sh) ``sys.executable`` is the executable itself, whose
arguments are Safehold's (``-m`` is no option of it), so the command is just the executable.
"""

from __future__ import annotations

import sys


def frozen() -> bool:
    """Whether this is the one-file executable (PyInstaller sets ``sys.frozen``)."""
    return bool(getattr(sys, "frozen", False))


def command() -> list[str]:
    """The argv prefix that runs this Safehold: Safehold's own arguments follow it."""
    return [sys.executable] if frozen() else [sys.executable, "-m", "safehold.cli"]
