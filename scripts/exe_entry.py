"""Entry point of the one-file executable (scripts/build-exe.sh): the `safehold` command."""

from safehold.cli.entry import main

if __name__ == "__main__":
    main()
