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
    psi: float | None = None,                       # GAN truncation of requests naming none; None = the model's recommended psi
) -> None:
    if run is None:
        from facegen.sample import model_dir

        run = model_dir(None)  # the embedded default model, or a one-line error saying to pass a run
    if not Path(run).exists():  # checked before the slow imports, so a typo is answered at once
        raise FacegenError(f"{run}: no such run or model folder; give a run folder written by `facegen train`")
    from facegen.sample import load_generator, model_dir

    model_dir(run)  # a run without model/ is answered at once, with how to export it
    check_address(host, port)  # a busy port too: before the model loads, not after

    import uvicorn

    from facegen.serve.app import create_app

    generator = load_generator(run, device)
    samplers = generator.info().get("samplers")
    if (sampler is not None or steps is not None) and not samplers:
        raise FacegenError(f"{run}: a {generator.family} model makes a face in one pass; drop --sampler/--steps")
    if sampler is not None and sampler not in samplers:
        raise FacegenError(f"--sampler {sampler}: this {generator.family} model offers {', '.join(samplers)}")
    app = create_app(generator, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue_size, psi=psi)
    print(f"facegen: serving {generator.name} ({generator.family}, {generator.resolution} px) at http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_address(host: str, port: int) -> None:
    """Bind `host`:`port` as uvicorn will (its Config.bind_socket: SO_REUSEADDR, IPv6 when the
    host has a colon), then let it go: a busy port, a host that is not this machine's or a port
    that needs root is refused in one line, in milliseconds, instead of after the model loads."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free
        try:
            sock.bind((host, port))
        except socket.gaierror as e:
            raise FacegenError(f"--host {host}: not a host name or address ({e.strerror}); "
                               f"use 127.0.0.1 (this machine only) or 0.0.0.0 (every network interface)") from None
        except OverflowError:
            raise FacegenError(f"--port {port}: use a TCP port from 1 to 65535, e.g. --port 8000") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FacegenError(f"--port {port}: {host}:{port} is already in use (another server?); "
                                   f"stop it or choose another --port, e.g. --port {port + 1 if port < 65535 else 8000}") from None
            if e.errno == errno.EACCES:
                raise FacegenError(f"--port {port}: permission denied (ports below 1024 need root); choose --port 1024 or above, e.g. 8000") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise FacegenError(f"--host {host}: not an address of this machine (--port {port}); "
                                   f"use 127.0.0.1 (this machine only) or 0.0.0.0 (every network interface)") from None
            raise FacegenError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); choose another --host or --port") from None
