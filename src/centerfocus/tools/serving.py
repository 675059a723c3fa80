"""`centerfocus serve`: a captioning endpoint on Ray Serve (`pip install "centerfocus[ray]"`), with dynamic batching.

    centerfocus serve --model runs/captioner --port 8000          # listens on 127.0.0.1 unless --host says otherwise
    curl --data-binary @photo.jpg http://127.0.0.1:8000/caption   # {"caption": "a red circle in the centre"}
    curl http://127.0.0.1:8000/health                             # {"status": "ok", "model": ...}

POST /caption takes the image file as the request body. Requests that arrive together are captioned as one batch
(`serve.batch`: up to --max_batch_size, waiting at most --batch_wait_ms for a batch to fill), with PyTorch behind it.
Bad requests get a 4xx with a JSON `{"error": ...}` and the server keeps serving: 400 for an empty body or a file that
is not a readable image, 413 for a body over --max_request_mb or an image over --max_image_pixels, 404/405 for other
routes and methods. On a cluster, `serve deploy` or `serve run centerfocus.tools.serving:app_builder` with the same
arguments, and `--replicas N` model replicas behind Ray Serve's proxy.

Why Ray Serve: it is the engine the bulk path already uses (Ray Data), it batches concurrent requests natively
(`serve.batch`), scales replicas across a cluster, and needs no second extra; LitServe would add a second serving
stack for the same features.
"""

import argparse
import asyncio
import io
import os
from typing import Optional

from .cli import add_server_arguments


class _ImageRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_image(body: bytes, max_image_pixels: int):
    """The PIL image in a request body, fully decoded; `_ImageRejected` (status and message) for what is not one."""
    from PIL import Image

    if not body:
        raise _ImageRejected(400, "The request body is empty: POST the image file as the body.")
    try:
        image = Image.open(io.BytesIO(body))
        width, height = image.size
        if width * height > max_image_pixels:
            raise _ImageRejected(413, f"The image is {width}x{height} = {width * height} pixels, over the limit of "
                                      f"{max_image_pixels}.")
        image.load()
    except _ImageRejected:
        raise
    except Exception as error:  # PIL raises many types for what is not an image
        raise _ImageRejected(400, f"The body is not a readable image ({type(error).__name__}: {error}).") from None
    return image


class CaptionService:
    """The Ray Serve deployment's body (also usable without Ray: `await service.caption([image])`)."""

    def __init__(self, model: str, max_batch_size: int = 32, batch_wait_ms: float = 10.0,
                 max_request_mb: float = 20.0, max_image_pixels: int = 40_000_000, generate_kwargs: Optional[dict] = None):
        from ..modeling_centerfocus import CenterFocusForConditionalGeneration
        from ..processing_centerfocus import CenterFocusProcessor

        self.model_name = model
        self.model = CenterFocusForConditionalGeneration.from_pretrained(model).eval()
        self.processor = CenterFocusProcessor.from_pretrained(model)
        self.max_request_bytes = int(max_request_mb * 1024 * 1024)
        self.max_image_pixels = max_image_pixels
        self.generate_kwargs = generate_kwargs or {}
        self.configure_batching(max_batch_size, batch_wait_ms / 1000)

    def configure_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from ray import serve

        self.caption = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
            self._caption_batch)

    async def _caption_batch(self, images: list) -> list[str]:
        # generate() runs in a thread, so the replica keeps accepting the requests that form the next batch
        return await asyncio.to_thread(self._generate, images)

    def _generate(self, images: list) -> list[str]:
        from .bulk_caption import _generate  # processor, generate under inference_mode, decode: as the bulk path

        return _generate(self.model, self.processor, images, **self.generate_kwargs)

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        # the path below the application's route prefix (`serve run ... route_prefix=/captioner`)
        path = request.url.path[len(request.scope.get("root_path", "")):].rstrip("/") or "/"
        if path == "/health":
            return JSONResponse({"status": "ok", "model": self.model_name})
        if path != "/caption":
            return JSONResponse({"error": f"No route {path}: POST /caption, GET /health."}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"error": "POST the image file to /caption."}, status_code=405)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_request_bytes:
            return _too_large(int(declared), self.max_request_bytes)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_request_bytes:
                return _too_large(len(body), self.max_request_bytes)
        try:
            image = read_image(body, self.max_image_pixels)
        except _ImageRejected as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        try:
            caption = await self.caption(image)
        except ValueError as error:  # an image the processor refuses (its mode, say), named
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse({"caption": caption})


def _too_large(size: int, limit: int):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"The request body is over {limit} bytes (got at least {size})."}, status_code=413)


def build_app(model: str, replicas: int = 1, **options):
    """The Ray Serve application: `replicas` copies of `CaptionService` behind Serve's HTTP proxy."""
    from ray import serve

    deployment = serve.deployment(CaptionService, name="CenterFocusCaptioner", num_replicas=replicas,
                                  max_ongoing_requests=max(64, 2 * options.get("max_batch_size", 32)))
    return deployment.bind(model, **options)


def app_builder(args: dict):
    """For `serve run centerfocus.tools.serving:app_builder model=DIR replicas=2 max_batch_size=32`."""
    numeric = {"replicas": int, "max_batch_size": int, "batch_wait_ms": float, "max_request_mb": float,
               "max_image_pixels": int}
    return build_app(**{name: numeric.get(name, str)(value) for name, value in args.items()})


def serve_main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="centerfocus serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser, port=8000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--batch_wait_ms", type=float, default=10.0)
    parser.add_argument("--max_request_mb", type=float, default=20.0)
    parser.add_argument("--max_image_pixels", type=int, default=40_000_000)
    args = parser.parse_args(argv)
    start(args.model, host=args.host, port=args.port, replicas=args.replicas, max_batch_size=args.max_batch_size,
          batch_wait_ms=args.batch_wait_ms, max_request_mb=args.max_request_mb,
          max_image_pixels=args.max_image_pixels)
    import time

    print(f"Serving {args.model} on http://{args.host}:{args.port}/caption (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()


def start(model: str, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, name: str = "centerfocus",
          route_prefix: str = "/", **options) -> None:
    """Start a local Ray instance (unless one runs) and the endpoint on `host:port` under `route_prefix` (another
    `name` adds a second application beside the first); returns when it serves."""
    from pathlib import Path

    import ray
    from ray import serve

    if Path(model).exists():  # the replicas run in other working folders
        model = str(Path(model).resolve())
    if not ray.is_initialized():
        # inside `ray job submit` (RAY_ADDRESS set) this joins the cluster; otherwise it starts a local instance
        ray.init(**({} if os.environ.get("RAY_ADDRESS") else {"include_dashboard": False, "log_to_driver": False}))
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(model, replicas=replicas, **options), name=name, route_prefix=route_prefix)


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


main = serve_main
