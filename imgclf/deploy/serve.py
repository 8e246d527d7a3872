"""``imgclf serve``: a FastAPI application that serves a run or an exported ``.onnx`` file.

POST /predict takes images as multipart uploads (one or several ``files``) or JSON (``{"images": [base64, ...]}``)
and answers the top-k classes per image (a multi-label model also the labels at or above their thresholds, in
``labels``). Safety first: the body size is enforced while it streams in (before any
multipart parser spools it), pixels are counted from the image header before decoding, the content is sniffed
(names and content types are ignored), every error is a JSON ``{"error": ...}`` with a 4xx status, and an optional
API key guards the model. Requests that arrive together are micro-batched into one forward pass.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..data.decode import BadImage, Preprocess, decode_cost, open_image
from ..errors import UserError
from ..inference.inputs import top_indices
from ..inference.load import load_predictor
from ..inference.predictor import Predictor, stacked
from .guards import (BodyLimit, DecodeBudget, GuardedH11, Limits, allowed_hosts, key_matches, resolve_api_key,
                     return_freed_memory)

if TYPE_CHECKING:
    from ..inference.classifier import Classifier

class ApiError(HTTPException):
    """An HTTP error whose body is ``{"error": message}``."""


class Batcher:
    """Collects images from concurrent requests and runs them through the model together: up to ``max_batch``
    images, waiting at most ``wait_ms`` after the first. One model thread, so the model is never called twice
    at once."""

    def __init__(self, predictor: Predictor, max_batch: int = 32, wait_ms: float = 5.0) -> None:
        self.predictor, self.max_batch, self.wait = predictor, max_batch, wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="imgclf-model")

    async def __call__(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.get_loop() is not loop:  # first call, or a new event loop (tests)
            self.queue = asyncio.Queue()
            self.task = loop.create_task(self._run())
        futures = [loop.create_future() for _ in pixels]
        for item, future in zip(pixels, futures):
            self.queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(items) < self.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            batch = stacked([pixels for pixels, _ in items])
            try:
                probs = await loop.run_in_executor(self.pool, self.predictor.proba, batch)
            except Exception as exc:  # the model failed: every waiting request gets the error, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), row in zip(items, probs):
                if not future.done():
                    future.set_result(row)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=False)


# BadImage.kind -> HTTP status
_STATUS = {"too large": 413, "not an image": 415, "busy": 503}


def decode(data: bytes, predictor: Predictor, limits: Limits, budget: DecodeBudget) -> np.ndarray:
    """Bytes -> the model's uint8 pixels. The format is sniffed from the content; pixels are counted from the
    header before anything is decoded, and the memory the decoding will hold is reserved from ``budget`` first."""
    if not data:
        raise ApiError(422, "empty file")
    try:
        # decoded as a file would be in training and predict (a large JPEG at a reduced scale)
        pre = Preprocess.of(predictor.config)
        cost = decode_cost(io.BytesIO(data), pre.channels, limits.max_pixels, pre.least_side)
        with budget.hold(cost):
            return predictor.pixels(open_image(io.BytesIO(data), limits.max_pixels, pre.least_side))
    except BadImage as exc:
        busy = exc.kind == "busy"
        raise ApiError(_STATUS.get(exc.kind, 422), str(exc), {"Retry-After": "1"} if busy else None) from None


# The request body /predict accepts, for the OpenAPI schema (the handler parses it itself, for both types).
_REQUEST_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "description": "base64 image bytes"}},
        "image": {"type": "string", "description": "one base64 image"}}}}}}


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "JSON images must be base64 strings")
    try:
        if value.startswith("data:"):  # a data URL: data:image/png;base64,....
            header, comma, value = value.partition(",")
            if not comma or not header.endswith(";base64"):
                raise ApiError(422, "a data URL image must be data:<type>;base64,<base64 bytes>")
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "an image is not valid base64") from None


async def _uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a multipart or JSON body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
        except HTTPException as exc:  # Starlette's parser limits say 400; too many parts is a size problem
            raise ApiError(413 if "Too many" in str(exc.detail) else 422, str(exc.detail)) from None
        except (ValueError, KeyError, AssertionError):
            raise ApiError(422, "malformed multipart body") from None
        files = [v for key, v in form.multi_items() if key in ("files", "file") and hasattr(v, "read")]
        if not files:
            raise ApiError(422, "no image: send the images as multipart field 'files'")
        return [(f.filename or f"image {i}", await f.read()) for i, f in enumerate(files)]
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... nested
            raise ApiError(422, "malformed JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, 'JSON body must be an object: {"images": [base64, ...]}')
        images = body.get("images", [body["image"]] if "image" in body else None)
        if not isinstance(images, list) or not images:
            raise ApiError(422, 'no image: send {"images": [base64, ...]} or {"image": base64}')
        if len(images) > limits.max_files:
            raise ApiError(413, f"too many images in one request (limit {limits.max_files})")
        return [(f"image {i}", _b64(v)) for i, v in enumerate(images)]
    raise ApiError(415, "send multipart/form-data (field 'files') or application/json ({\"images\": [base64]})")


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error as ``{"error": "one line"}`` with its status, validation errors included."""

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, 422)


def _metadata(predictor: Predictor, limits: Limits) -> dict:
    """What GET /metadata says about the model and the server's limits."""
    cfg, gradcam = predictor.config, predictor.supports_gradcam
    return {"model": cfg.model, "engine": "pytorch" if gradcam else "onnxruntime", "task": predictor.task.name,
            "classes": len(predictor.classes), "input": f"{cfg.channels}x{cfg.img_size}x{cfg.img_size}",
            "resize": cfg.resize, "crop_pct": cfg.crop_pct, "mean": cfg.mean, "std": cfg.std, "gradcam": gradcam,
            "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels,
                       "max_files": limits.max_files, "decode_memory_bytes": limits.decode_memory_bytes}}


def _answer(predictor: Predictor, name: str, probs: np.ndarray, k: int) -> dict:
    """One image's entry in POST /predict's answer: the top ``k``, and a multi-label model's labels."""
    item = {"file": name, "top": [{"label": predictor.classes[i], "probability": round(float(probs[i]), 6)}
                                  for i in top_indices(probs, k)]}
    if predictor.task.multilabel:  # every label at or above its threshold, most likely first
        item["labels"] = [{"label": predictor.classes[i], "probability": round(float(probs[i]), 6)}
                          for i in predictor.task.answer(probs, k, predictor.threshold)]
    return item


def _guarded_app(limits: Limits, hosts: list[str] | None) -> FastAPI:
    """An empty application behind the host check (outermost) and the body limit, its errors as JSON."""
    # FastAPIOffline: /docs and /redoc with Swagger UI's and ReDoc's files from the package, not a CDN, so the API
    # page works offline and on a closed network.
    app = FastAPIOffline(title="imgclf", description="Image classification: upload images, get the top classes.",
                         version="1")
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes, timeout=limits.timeout_s)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts or allowed_hosts("127.0.0.1"))
    _answer_errors_as_json(app)
    return app


def create_app(predictor: Predictor, limits: Limits | None = None, api_key: str | None = None, max_batch: int = 32,
               batch_wait_ms: float = 5.0, hosts: list[str] | None = None) -> FastAPI:
    """The web application for ``predictor`` (a run's :class:`Classifier` or an ONNX file's classifier).
    ``api_key``: required in ``X-API-Key`` or ``Authorization: Bearer`` (default ``$IMGCLF_API_KEY``, else none).
    ``hosts``: the ``Host`` header values it answers (default: the loopback names; see :func:`allowed_hosts`)."""
    limits = limits or Limits()
    api_key = resolve_api_key(api_key)
    batcher = Batcher(predictor, max_batch, batch_wait_ms)
    budget = DecodeBudget(limits.decode_memory_bytes, limits.decode_wait_s)
    app = _guarded_app(limits, hosts)
    app.state.decode_budget = budget  # visible, for tests and for a caller that shares it
    app.router.add_event_handler("shutdown", batcher.close)
    gradcam_ok = predictor.supports_gradcam

    def check_key(request: Request) -> None:
        if api_key is not None and not key_matches(request.headers, api_key):
            raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header or as "
                                "'Authorization: Bearer KEY'")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("imgclf").joinpath("assets/index.html").read_text(encoding="utf-8")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "api_key_required": api_key is not None}

    @app.get("/labels")
    async def labels(request: Request) -> dict:
        check_key(request)
        return {"labels": predictor.classes}

    @app.get("/metadata")
    async def metadata(request: Request) -> dict:
        check_key(request)
        return _metadata(predictor, limits)

    @app.post("/predict", openapi_extra={"requestBody": _REQUEST_BODY})
    async def predict(request: Request, top_k: int = Query(5, ge=1, le=1000),
                      gradcam: bool = Query(False, description="add a Grad-CAM overlay (PNG, base64) per image")
                      ) -> dict:
        check_key(request)
        started = time.perf_counter()
        uploads = await _uploads(request, limits)
        pixels = [await run_in_threadpool(decode, data, predictor, limits, budget) for _, data in uploads]
        probs = await batcher(pixels)
        k = min(top_k, len(predictor.classes))
        results = []
        for (name, _), p, image in zip(uploads, probs, pixels):
            item = _answer(predictor, name, p, k)
            if gradcam and gradcam_ok:  # on the model thread: Grad-CAM hooks must not see a batched forward pass
                item["gradcam"] = await asyncio.get_running_loop().run_in_executor(batcher.pool, _gradcam_png,
                                                                                   predictor, image)
            results.append(item)
        answer = {"predictions": results, "time_ms": round(1000 * (time.perf_counter() - started), 2)}
        if gradcam and not gradcam_ok:  # the predictions still come; the overlay cannot
            answer["warnings"] = ["no Grad-CAM: it needs the PyTorch model; serve the run directory, not the .onnx"]
        return answer

    return app


def _gradcam_png(clf: "Classifier", pixels: np.ndarray) -> str:
    """The Grad-CAM overlay of the predicted class as a base64 PNG."""
    import torch

    from ..reports.explain import grad_cam, overlay

    x = torch.tensor(pixels)[None]
    found = grad_cam(clf, x)
    picture = overlay(pixels.transpose(1, 2, 0), found.heat[0])
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def app_from_env() -> FastAPI:
    """The application for ``uvicorn --factory`` worker processes, configured through $IMGCLF_SERVE."""
    settings = json.loads(os.environ["IMGCLF_SERVE"])
    return_freed_memory()
    return create_app(load_predictor(settings["model"], device=settings["device"]), Limits(**settings["limits"]),
                      settings.get("api_key"), settings["max_batch"], settings["batch_wait_ms"], settings["hosts"])


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, api_key: str | None = None,
          limits: Limits | None = None, device: str = "cpu", max_batch: int = 32, batch_wait_ms: float = 5.0,
          hosts: list[str] | None = None, max_connections: int = 256) -> None:
    """Run the application on uvicorn; more than one worker runs one process (and one model copy) each.
    ``hosts`` adds to the ``Host`` names it answers (``["*"]``: any); ``max_connections`` open at once, beyond
    which requests get a 503."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    limits = limits or Limits()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    api_key = resolve_api_key(api_key)
    predictor = load_predictor(model, device=device)  # fail here, once, with a clear message, before forking workers
    return_freed_memory()
    names = allowed_hosts(host, hosts or ())
    options = dict(host=host, port=port, log_level="warning", http=GuardedH11, limit_concurrency=max_connections,
                   timeout_keep_alive=5)
    if workers == 1:
        config = uvicorn.Config(create_app(predictor, limits, api_key, max_batch, batch_wait_ms, names), **options)
    else:
        os.environ["IMGCLF_SERVE"] = json.dumps({"model": str(model), "device": device, "api_key": api_key,
                                                 "limits": limits.__dict__, "max_batch": max_batch,
                                                 "batch_wait_ms": batch_wait_ms, "hosts": names})
        config = uvicorn.Config("imgclf.deploy.serve:app_from_env", factory=True, workers=workers, **options)
    config.header_timeout = limits.timeout_s  # read by GuardedH11, in every worker process
    if workers == 1:
        uvicorn.Server(config).run()
    else:  # what uvicorn.run does for workers, with this config
        Multiprocess(config, sockets=[config.bind_socket()]).run()
