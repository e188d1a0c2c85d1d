"""The `facegen` command. Each command parses its options, then calls one library function.

User mistakes raise FacegenError; `main` prints them as one line and exits with status 2.
Heavy imports (torch, diffusers) happen inside the commands so `facegen --help` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from facegen.utils import FacegenError

app = typer.Typer(
    name="facegen",
    help="Train, sample, evaluate and serve realistic face generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare and inspect face stores.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- data (issue: foundation) ----------------------------------------------------------


# ---- train (issue: training loop) ------------------------------------------------------


# ---- sample ----------------------------------------------------------------------------


# ---- eval / compare --------------------------------------------------------------------


# ---- serve -----------------------------------------------------------------------------


# ---- demo ------------------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
