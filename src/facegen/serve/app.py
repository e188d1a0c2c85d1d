"""The web app: a page with one large face, and the small API behind it.

    GET /                       the page (a new face on every load; /?seed=N shows face N)
    GET /face.png?seed=N&size=S&psi=P&v=TAG  one face as PNG; the same seed always gives the same bytes
    GET /morph.gif?from=A&to=B&frames=K&size=S&psi=P&v=TAG   a looping walk from face A to face B
    GET /info                   model, family, sampler, steps, device, batching figures
    GET /healthz                {"status": "ok"}

Faces come from `facegen.sample.generate` (STYLE G9), morphs from morph.py (the same
Generator contract), all inside one worker thread that coalesces concurrent requests into
batches (batcher.py). `psi` is the GAN truncation (0 < psi <= 1, default 1 = off); it is part
of every work, cache and ETag key. `v` is the model's tag (/info `model_tag`, a hash of its info
and weights): only a URL naming the model being served is cached as immutable; without it (or
with another model's) the browser revalidates its copy by ETag, so a retrained model at the same
address is never hidden behind a cached face. `size` resamples with Lanczos (encode.py): the
page asks for the face at its screen size, smooth, and for the model's own pixels when its
"pixels" toggle is on. Bad input gets a 4xx JSON error that states the valid values.
The server never opens a file named by a request: the page's three files are read from
the package once, at start-up, and served from memory under fixed routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections import OrderedDict
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Hashable

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from facegen import sample
from facegen.families.base import Generator
from facegen.serve.batcher import MicroBatcher, QueueFull
from facegen.serve.encode import gif_bytes, png_bytes
from facegen.serve.morph import morph_frames
from facegen.utils import FacegenError

MAX_SEED = 2**32 - 1          # seeds are unsigned 32-bit: what the page draws and any RNG accepts
MIN_SIZE, MAX_SIZE = 16, 1024  # pixels per side of a served image
MAX_FRAMES = 48               # frames per morph; each costs a full sample
MAX_MORPH_SIZE = 512          # pixels per side of a morph: a GIF holds 2 * frames pictures
CACHE_BYTES = 256 * 2**20     # most bytes of encoded images kept: a 512 px face is ~150 KiB, a 256 px morph ~1.3 MiB
IMMUTABLE = "public, max-age=31536000, immutable"  # a URL that names the model's version (v=TAG): its bytes never change
REVALIDATE = "public, no-cache"                    # any other seeded URL: kept, but checked by ETag before each use
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# What a query value must be, said in the 422 when it is not (the page says the same).
VALID = {"seed": f"seed must be a whole number 0..{MAX_SEED}", "from": f"from must be a whole number 0..{MAX_SEED}",
         "to": f"to must be a whole number 0..{MAX_SEED}", "psi": "psi must be a number above 0 and at most 1 (1 = no truncation)"}


class LRUCache:
    """Encoded images by request key, least recently used dropped first when there are more
    than `capacity` of them or they hold more than `max_bytes`. Event-loop only."""

    def __init__(self, capacity: int, max_bytes: int = CACHE_BYTES):
        self.capacity, self.max_bytes, self.nbytes = capacity, max_bytes, 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: Hashable, value: bytes) -> None:
        if self.capacity <= 0 or len(value) > self.max_bytes:
            return
        self.nbytes += len(value) - len(self._items.get(key, b""))
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity or self.nbytes > self.max_bytes:
            self.nbytes -= len(self._items.popitem(last=False)[1])

    def __len__(self) -> int:
        return len(self._items)


def create_app(
    generator: Generator,
    steps: int | None = None,                       # sampler steps per face; None = the model's default
    sampler: str | None = None,                     # sampler name (diffusion); None = the model's default
    max_batch: int = 8,                             # most faces generated in one batch
    window_ms: float = 10.0,                        # how long a request waits for others to batch with
    queue_size: int = 64,                           # most requests waiting; beyond it: 503 + Retry-After
    cache_size: int = 512,                          # encoded images kept in memory (LRU); 0 = no cache
    psi: float | None = None,                       # GAN: the truncation of requests naming none; None = the model's recommended_psi
) -> FastAPI:
    """The FastAPI app serving `generator`. Generation starts in a worker thread at once."""
    options = {k: v for k, v in {"sampler": sampler, "steps": steps}.items() if v is not None}
    if psi is not None and not getattr(generator, "truncation", False):
        raise FacegenError(f"--truncation: a {generator.family} model has no truncation (a GAN's option); drop --truncation")
    default_psi = getattr(generator, "recommended_psi", 1.0) if psi is None else sample.check_psi(psi)
    # The model's identity, weights included, goes into every ETag and image URL, so serving
    # another model on the same address (or the same run retrained) never shows a face cached
    # from the previous one.
    # serve --truncation goes in the model tag too: another default psi is another page
    model_info = {**generator.info(), **options, **({"default_psi": default_psi} if psi is not None else {}),
                  "weights_sha256": sample.weights_hash(generator)}
    model_tag = hashlib.sha256(json.dumps(model_info, sort_keys=True, default=str).encode()).hexdigest()[:12]
    page_psi = default_psi if getattr(generator, "truncation", False) else None
    page = _page(model_info, model_tag, page_psi)
    static = {name: resources.files("facegen.serve").joinpath("static", name).read_bytes() for name in STATIC}
    cache = LRUCache(cache_size)
    in_flight: dict[tuple, asyncio.Future] = {}             # work queued or running, by (key, payload)

    def handle(key: tuple, payloads: list[Any]) -> list[bytes]:
        """Runs in the batcher's thread: one batch of faces, or one morph."""
        kind, size, psi = key[0], key[1], key[-1]
        if kind == "face":
            images = sample.generate(generator, payloads, batch_size=len(payloads), psi=psi, **options)  # (N, H, W, 3) uint8
            return [png_bytes(image, size) for image in images]
        frames = key[2]
        return [gif_bytes(morph_frames(generator, a, b, frames, psi=psi, **options), size) for a, b in payloads]

    batcher = MicroBatcher(handle, max_batch=max_batch, window_ms=window_ms, queue_size=queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="facegen", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.cache = batcher, cache
    _add_error_handlers(app)

    async def image(request: Request, key: tuple, payload: Any, media_type: str, seeded: bool, version: str | None) -> Response:
        """Answer from the cache, or queue the work; 304 when the browser already has it."""
        etag = f'"{model_tag}-' + hashlib.sha256(repr((key, payload)).encode()).hexdigest()[:16] + '"'
        # The same seed is the same face only as long as the same weights serve it: a plain
        # URL outlives a retrained model at its address, so only a versioned one is immutable.
        if seeded:
            headers = {"Cache-Control": IMMUTABLE if version == model_tag else REVALIDATE, "ETag": etag}
        else:
            headers = {"Cache-Control": "no-store"}
        if seeded and etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = cache.get((key, payload))
        if body is None:
            try:
                body = await shared_work(key, payload)
            except QueueFull:
                return _error(503, "the server is busy; retry in a moment", {"Retry-After": "1"})
        return Response(body, media_type=media_type, headers=headers)

    def truncation(psi: float | None) -> float:
        """The request's psi as the one float that keys its work, cache and ETag (1 and 1.0 are
        the same face); omitted, `serve --truncation` or the model's recommended psi (facegen.json `recommended_psi`,
        chosen by measuring a truncation curve; 1 when it has none). FacegenError when out of
        range or the model has no truncation."""
        if psi is None:
            psi = default_psi   # serve --truncation, else the model's recommended psi
        return sample.decode_options(generator, {"psi": psi}).get("psi", 1.0)

    async def shared_work(key: tuple, payload: Any) -> bytes:
        """Queue the work once, however many requests ask for it meanwhile (the page
        prefetches the next face, then asks for it again when space is pressed)."""
        task = in_flight.get((key, payload))
        if task is None:
            task = in_flight[(key, payload)] = asyncio.ensure_future(batcher.submit(key, payload))
            task.add_done_callback(lambda t: finish(key, payload, t))
        return await asyncio.shield(task)  # a client that goes away does not cancel the others' face

    def finish(key: tuple, payload: Any, task: asyncio.Future) -> None:
        in_flight.pop((key, payload), None)
        if not task.cancelled() and task.exception() is None:
            cache.put((key, payload), task.result())

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in STATIC:  # a fixed set served from memory: no path ever reaches the disk
            return _error(404, f"no such file: /static/{name}")
        return Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/face.png")
    async def face(
        request: Request,
        seed: int | None = Query(None, ge=0, le=MAX_SEED, description="which face; omitted = a random one"),
        size: int | None = Query(None, ge=MIN_SIZE, le=MAX_SIZE, description="pixels per side; omitted = the model's"),
        psi: float | None = Query(None, description="GAN truncation, 0 < psi <= 1 (1 = off); omitted = the model's recommended_psi, else 1"),
        v: str | None = Query(None, description="the model's tag (/info model_tag); the served model's makes the answer immutable"),
    ) -> Response:
        try:
            psi = truncation(psi)
        except FacegenError as e:
            return _error(400, str(e))
        seeded = seed is not None
        seed = seed if seeded else secrets.randbelow(MAX_SEED + 1)
        response = await image(request, ("face", size or generator.resolution, psi), seed, "image/png", seeded, v)
        response.headers["X-Seed"] = str(seed)
        return response

    @app.get("/morph.gif")
    async def morph(
        request: Request,
        seed_from: int = Query(..., alias="from", ge=0, le=MAX_SEED, description="the first face's seed"),
        seed_to: int = Query(..., alias="to", ge=0, le=MAX_SEED, description="the last face's seed"),
        frames: int = Query(12, ge=2, le=MAX_FRAMES, description="faces along the way, both ends included"),
        size: int | None = Query(None, ge=MIN_SIZE, le=MAX_MORPH_SIZE, description="pixels per side; omitted = the model's"),
        psi: float | None = Query(None, description="GAN truncation, 0 < psi <= 1 (1 = off); omitted = the model's recommended_psi, else 1"),
        v: str | None = Query(None, description="the model's tag (/info model_tag); the served model's makes the answer immutable"),
    ) -> Response:
        try:
            psi = truncation(psi)
        except FacegenError as e:
            return _error(400, str(e))
        key = ("morph", size or generator.resolution, frames, psi)
        return await image(request, key, (seed_from, seed_to), "image/gif", True, v)

    @app.get("/info")
    async def info() -> dict:
        stats = batcher.stats
        return {
            **model_info,
            "model_tag": model_tag,
            "serving": {"max_batch": max_batch, "window_ms": window_ms, "queue_size": queue_size, "queued": batcher.pending,
                        "cache_size": cache_size, "cached": len(cache), "batches": stats.batches, "images": stats.items,
                        "largest_batch": stats.largest},
        }

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def _page(model_info: dict, model_tag: str, psi: float | None) -> str:
    """index.html with the model's facts filled in (escaped: a model name is not trusted HTML).
    `psi` is the truncation the page starts at (the model's recommended psi), None for a model
    without truncation: the page then has no truncation control."""
    from html import escape

    steps, side = model_info.get("steps"), model_info.get("resolution", "")
    facts = [model_info.get("name", "model"), model_info.get("family"), model_info.get("sampler"),
             f"{steps} step{'s' if steps != 1 else ''}" if steps else None]
    values = {"facts": " · ".join(f"<span>{escape(str(f))}</span>" for f in facts if f),
              "tag": escape(model_tag), "resolution": escape(str(side)),
              "psi": "" if psi is None else f"{psi:g}", "psi_hidden": " hidden" if psi is None else ""}
    template = resources.files("facegen.serve").joinpath("static", "index.html").read_text(encoding="utf-8")
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON with one readable line; nothing a client sends produces a 500."""

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(part) for part in e.get("loc", ())[1:]) or "request"
            if where in VALID and e.get("type") != "missing":  # say what is valid, not pydantic's words
                problems.append(f"{VALID[where]}, not {str(e.get('input'))[:40]!r}")
            else:
                problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"no such page: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"generation failed: {type(exc).__name__}")

