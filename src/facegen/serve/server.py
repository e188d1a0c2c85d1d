"""`facegen serve`: load a run's exported model (or the embedded default) and serve the page."""

from __future__ import annotations

from pathlib import Path

from facegen.utils import FacegenError


def serve(
    run: Path | None,                               # run folder or exported model; None = the embedded default model
    host: str = "127.0.0.1",
    port: int = 8000,
    steps: int | None = None,                       # sampler steps; None = the model's default
    sampler: str | None = None,                     # sampler name; None = the model's default
    max_batch: int = 8,                             # most faces per batch
    window_ms: float = 10.0,                        # batching window
    queue_size: int = 64,                           # most waiting requests before 503
    device: str | None = None,                      # torch device; None = cuda when present, else cpu
) -> None:
    import uvicorn

    from facegen.sample import load_generator
    from facegen.serve.app import create_app

    if run is not None and not Path(run).exists():
        raise FacegenError(f"{run}: no such run; give a run folder written by `facegen train` (or omit RUN for the default model)")
    generator = _load(load_generator, run, device)
    app = create_app(generator, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue_size)
    print(f"facegen: serving {generator.name} ({generator.family}, {generator.resolution} px) at http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _load(load_generator, run: Path | None, device: str | None):
    kwargs = {} if device is None else {"device": device}
    try:
        return load_generator(run, **kwargs)
    except FacegenError:
        raise
    except FileNotFoundError as e:
        if run is None:
            raise FacegenError(f"no default model is installed ({e.filename or e}); pass a RUN folder: `facegen serve runs/NAME`") from None
        raise FacegenError(f"{run}: {e}; give a run folder with an exported model/ (finish `facegen train` first)") from None
