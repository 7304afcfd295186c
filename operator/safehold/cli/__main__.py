"""`python -m safehold.cli` runs the CLI."""

from safehold.cli.main import main

main()
