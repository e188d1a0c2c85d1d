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


@app.command("serve")
def serve_command(
    run: Optional[Path] = typer.Argument(None, help="Run folder (or its model/) to serve; omitted = the embedded default model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 makes the page reachable from other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    steps: Optional[int] = typer.Option(None, min=1, max=1000, help="Sampler steps per face (fewer = faster); default: the model's."),
    sampler: Optional[str] = typer.Option(None, help="Diffusion sampler (ddpm, ddim, dpm++, unipc); default: the model's."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, max=256, help="Most faces generated together in one batch."),
    window_ms: float = typer.Option(10.0, "--window-ms", min=0, max=1000, help="How long a request waits for others to share its batch."),
    queue: int = typer.Option(64, min=1, max=10000, help="Most waiting requests; beyond it the server answers 503 with Retry-After."),
) -> None:
    """Serve a web page that shows a new face on every refresh, with a JSON/PNG API.

    Examples:
      facegen serve                          # the embedded default model on http://127.0.0.1:8000/
      facegen serve runs/00003-ddpm --steps 25 --sampler ddim
      facegen serve runs/00004-gan --host 0.0.0.0 --port 8080 --max-batch 32
    """
    from facegen.serve.server import serve

    serve(run, host=host, port=port, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue)


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
