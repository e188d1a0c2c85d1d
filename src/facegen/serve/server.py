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
    if run is None:
        from facegen.sample import model_dir

        run = model_dir(None)  # the embedded default model, or a one-line error saying to pass a run
    if not Path(run).exists():  # checked before the slow imports, so a typo is answered at once
        raise FacegenError(f"{run}: no such run or model folder; give a run folder written by `facegen train`")

    import uvicorn

    from facegen.sample import load_generator
    from facegen.serve.app import create_app

    generator = load_generator(run, device)
    samplers = generator.info().get("samplers")
    if (sampler is not None or steps is not None) and not samplers:
        raise FacegenError(f"{run}: a {generator.family} model makes a face in one pass; drop --sampler/--steps")
    if sampler is not None and sampler not in samplers:
        raise FacegenError(f"--sampler {sampler}: this {generator.family} model offers {', '.join(samplers)}")
    app = create_app(generator, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue_size)
    print(f"facegen: serving {generator.name} ({generator.family}, {generator.resolution} px) at http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
