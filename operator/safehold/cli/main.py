"""Entry point of the ``safehold`` command-line tool (the runner)."""

from __future__ import annotations

import click

from safehold import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="safehold")
def cli() -> None:
    """Safehold: back up and restore databases to local or object storage."""


def main() -> None:
    cli()
