"""`python -m pipeline` and the `digit-recognizer` command.

The CLI's imports (typer, pandas, numpy) take a few tenths of a second; a Ctrl-C among them is the same quiet
exit 130 as anywhere else, not a traceback from inside an import.
"""

import sys


def main() -> None:
    try:
        from pipeline.cli import main as run_cli
    except KeyboardInterrupt:
        print("interrupted: nothing was done", file=sys.stderr)
        sys.exit(130)
    run_cli()


if __name__ == "__main__":
    main()
