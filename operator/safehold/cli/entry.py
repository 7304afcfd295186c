"""The `safehold` console script: the CLI, or one clear line when its libraries are missing.

The package's bare install holds the contract and the operator's side; the command-line tool
needs the ``runner`` extra (``pipx install 'safehold[runner]'``). Without it, importing the CLI
fails, and this says which extra to install instead of printing a traceback.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    # pydantic looks for plugins (an entry-point scan of every installed distribution, 13 ms
    # here) when it builds the first model; Safehold uses none. Set in the environment, as
    # pydantic documents, so that a user who wants one can still say otherwise.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        from safehold.cli.main import main as cli_main
    except ImportError as exc:
        sys.stderr.write(
            f"error: the safehold command needs its 'runner' extra (no module {exc.name!r}):"
            " install it with pipx install 'safehold[runner]' (or pip install"
            " 'safehold[runner]')\n")
        sys.exit(2)
    cli_main()
