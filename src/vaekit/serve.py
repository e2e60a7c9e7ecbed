"""``vaekit serve``: a local web page and an HTTP API over the task functions.

The page (``assets/serve/``, no outside request) uses only this API; FastAPI publishes its schema at
``/openapi.json``.  Every task endpoint takes a multipart form whose file field is ``image`` (``mask`` for
the inpainting mask) and answers ``image/png`` with the figures in ``X-Vaekit-*`` headers, or JSON with
``?format=json`` (images as PNG data URLs).

Limits, for a server on a laptop or a shared box: uploads above ``max_upload_mb`` are refused with 413
while they are read (never held whole), images above the pixel limit get 413, anything not an image 422.
One inference runs at a time per worker, in a thread so the event loop keeps answering; at most ``queue``
requests wait, the next gets 503 with Retry-After.  A request whose client went away while it waited is
dropped.  Uploads are decoded from memory: no client path touches the file system.
"""

import asyncio
import base64
import io
import json
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from .errors import VaekitError

ASSETS = Path(__file__).parent / "assets" / "serve"
SAMPLES = ("chelsea", "astronaut", "coffee")  # chelsea ships; the others come with scikit-image
PNG = "image/png"


class Busy(Exception):
    """The queue is full."""


class Gone(Exception):
    """The client left before its turn."""


class UploadLimit:
    """ASGI middleware: answer 413 once a request body passes ``limit`` bytes, counted as it arrives; the
    application then sees the client gone, and whatever it answers is dropped."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen, started, refused = 0, False, False

        async def counted():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def watch(message):
            nonlocal started
            if refused:
                return  # our 413 went out; the application's own answer is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send):
        body = json.dumps({"detail": f"the upload is larger than {self.limit // 2**20} MB"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Worker:
    """One inference at a time, in a thread; at most ``queue`` requests waiting."""

    def __init__(self, queue: int):
        self.queue = queue
        self.lock = asyncio.Lock()
        self.waiting = 0

    async def run(self, request, fn):
        if self.lock.locked() and self.waiting >= self.queue:
            raise Busy
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        try:
            if await request.is_disconnected():
                raise Gone
            return await asyncio.to_thread(fn)
        finally:
            self.lock.release()


def decode_image(data: bytes, max_pixels: int, what: str = "the upload", *, with_alpha: bool = False):
    """Upload bytes -> H x W (x 3) array via the package reader's rules (``with_alpha``: and its alpha plane or
    None, as :func:`vaekit.io.read_with_alpha`); 413 for too many pixels, VaekitError for anything that is not an
    image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise VaekitError(f"{what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h, fmt = im.width, im.height, (im.format or "png").lower()
    except (UnidentifiedImageError, OSError, ValueError):
        raise VaekitError(f"{what} is not an image (PNG, JPEG, TIFF or WebP)") from None
    if w * h > max_pixels:
        raise PixelLimit(f"{what} has {w}x{h} pixels, above the limit of {max_pixels}")

    from .io import read_array, read_with_alpha

    with tempfile.TemporaryDirectory(prefix="vaekit-serve-") as tmp:  # private (0700), removed on exit
        path = Path(tmp) / f"upload.{fmt}"  # the name is ours, never the client's
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():  # a mask's alpha is dropped without news
                warnings.simplefilter("ignore", UserWarning)
                return read_with_alpha(path, max_pixels) if with_alpha else read_array(path, max_pixels=max_pixels)
        except VaekitError as e:
            raise VaekitError(str(e).replace(str(path), what)) from None


class PixelLimit(VaekitError):
    pass


def png_bytes(img, icc: bytes | None = None, alpha=None) -> bytes:
    """An image as PNG bytes, with the colour profile ``icc`` and the transparency ``alpha`` of the upload it came
    from (None: none)."""
    from .io import encode_image

    return encode_image(img, "PNG", icc=icc, alpha=alpha)  # the CLI's outputs' encoder


def upload_profile(data: bytes) -> bytes | None:
    """The colour profile embedded in an upload that :func:`decode_image` has read (None: none)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.info.get("icc_profile") or None


def _data_url(img, icc: bytes | None = None, alpha=None) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img, icc, alpha)).decode()


def _psnr(ref, img, seen=None) -> float | None:
    """PSNR of ``img`` against ``ref`` on 8-bit levels; over the pixels ``seen`` marks (a cut-out's visible ones)."""
    from .metrics import hole_psnr, to_u8

    if ref is None or np.shape(ref) != np.shape(img):
        return None

    def u8(a):  # the codecs give and take uint8; the other tasks [0, 1] floats
        a = np.asarray(a)
        return a if a.dtype == np.uint8 else to_u8(a)

    v = hole_psnr(u8(img), u8(ref), np.ones(np.shape(img)[:2], bool) if seen is None else seen)
    return round(v, 3) if math.isfinite(v) else None


def _same_size_classical(img: np.ndarray, budget: int, seen=None) -> list[dict]:
    """JPEG, WebP and AVIF at the largest quality whose file fits ``budget`` bytes (their smallest if none); their
    PSNR over the pixels ``seen`` marks, as ours."""
    from .baselines import BASELINES

    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    out = []
    for name in ("jpeg", "webp", "avif"):
        codec = BASELINES["compress"].get(name)
        if codec is None:
            continue
        lo, hi, best = 1, 100, None
        while lo <= hi:
            q = (lo + hi) // 2
            data = codec.encode(rgb, q)
            if len(data) <= budget:
                best, lo = (q, data), q + 1
            else:
                hi = q - 1
        q, data = best or (1, codec.encode(rgb, 1))
        dec = codec.decode(data)
        out.append(
            {
                "codec": name,
                "quality": q,
                "bytes": len(data),
                "bpp": round(8 * len(data) / (img.shape[0] * img.shape[1]), 4),
                "psnr": _psnr(rgb, dec, seen),
                "image": _data_url(dec),
            }
        )
    return out


class Tasks:
    """The work behind each endpoint: arrays in, (image, figures, extra images) out; models loaded once."""

    def __init__(self, device=None):
        self.device = device
        self.models: dict = {}

    def _model(self, key, load):
        if key not in self.models:
            self.models[key] = load()
        return self.models[key]

    def denoise(self, img, *, sigma, method, add_sigma, seed, strength=1.0):
        from . import degrade
        from .tasks.denoise import denoise, load_denoiser

        clean = None
        if add_sigma:
            clean, img = img, degrade.gaussian(img, add_sigma, seed=seed)
        ch = 1 if img.ndim == 2 else 3
        model = None  # the VAE is loaded (once) only when it is asked for
        if method == "vae":
            model = self._model(("denoise", ch), lambda: load_denoiser(None, ch, device=self.device))
        r = denoise(img, sigma, method=method, model=model, seed=seed, details=True, strength=strength)
        figures = {"sigma": r.sigma, "sigma_estimated": r.sigma_estimated, "path": r.path}
        if "strength" in r.info:
            figures["strength"] = r.info["strength"]
        figures["psnr"] = _psnr(clean, r.image)
        if clean is not None:
            figures["psnr_noisy"] = _psnr(clean, img)
        return r.image, figures, {"noisy": img} if clean is not None else {}

    def inpaint(self, img, mask, *, method, samples, seed, detect):
        from .tasks.inpaint import detect_scratches, inpaint, load_inpainter

        if detect:
            mask = detect_scratches(img)
            if not mask.any():
                raise VaekitError("no scratch found: draw the mask instead")
        if mask is None:
            raise VaekitError("inpaint needs a mask (a PNG, white = missing) or detect=scratches")
        model = self._model("inpaint", lambda: load_inpainter(None, device=self.device)) if method == "vae" else None
        r = inpaint(img, mask, samples, method=method, model=model, seed=seed, details=True)
        figures = {"hole_fraction": round(float(mask.mean()), 5), "method": method, "samples": samples}
        extra = {"mask": mask.astype(np.float32)}
        for i, s in enumerate(r.samples if samples > 1 else []):
            extra[f"sample_{i}"] = s
        return r.image, figures, extra

    def compress(self, img, *, quality, compare, effort=0, icc=None, alpha=None):
        from .io import SourceFormat, split_alpha, to_uint8
        from .tasks.compress import compress_info, decompress, load_codec

        img = to_uint8(img)  # the codecs, ours and the classical ones, take 8-bit pixels
        codec = self._model("codec", lambda: load_codec(None, self.device))
        kept = icc if SourceFormat(8, icc).foreign_profile else None  # as vaekit compress stores it
        coded = img if alpha is None else np.dstack([img, to_uint8(alpha)])  # the file keeps the plane
        data, info = compress_info(coded, quality, effort=effort, model=codec, icc=kept)
        rec, _ = split_alpha(decompress(data, model=codec))  # the plane comes back as it went (lossless)
        seen = None if alpha is None else to_uint8(alpha) > 0  # a cut-out's PSNR: where it shows
        figures = {
            "quality": info["quality"],
            "effort": effort,
            "bytes": len(data),
            "bpp": round(info["bpp"], 4),
            "psnr": _psnr(img, rec, seen),
        }
        if alpha is not None:
            figures["alpha_bytes"] = info["alpha_bits"] // 8
        if compare:  # colour against colour: the classical files get the bytes of ours less its alpha plane
            figures["classical"] = _same_size_classical(img, len(data) - info["alpha_bits"] // 8, seen)
        return rec, figures, {"vkc": data}

    def decompress(self, data):
        from .tasks.compress import decompress

        img = decompress(data, device=self.device)  # the header names the codec; an alpha plane is its last channel
        return img, {"width": img.shape[1], "height": img.shape[0]}, {}

    def compensate(self, img, *, method, seed):
        from .tasks.common import resolve_model
        from .tasks.compensate import compensate

        model = None  # the learned model is loaded (once) only when it is asked for
        if method == "vae":
            model = self._model("compensate", lambda: resolve_model("compensate-posterior", device=self.device))
        r = compensate(img, method=method, model=model, seed=seed, details=True)
        return r.image, {k: v for k, v in r.info.items() if k != "seconds"}, {}


def create_app(*, max_upload_mb: float = 50, max_pixels: int | None = None, queue: int = 4, device=None):
    """``(asgi, app)``: the upload-limited ASGI app that ``vaekit serve`` runs, and the FastAPI app inside it."""
    from . import __version__
    from .baselines import available
    from .io import max_pixels_default

    max_pixels = max_pixels or max_pixels_default()
    app = FastAPI(
        title="vaekit",
        version=__version__,
        description="Restore, repair, compress and compare photos with VAEs and their classical alternatives.",
    )
    worker, tasks = Worker(queue), Tasks(device)

    @app.exception_handler(VaekitError)
    async def _bad_input(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=413 if isinstance(exc, PixelLimit) else 422)

    @app.exception_handler(Busy)
    async def _busy(request, exc):
        return JSONResponse({"detail": "busy: try again shortly"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Gone)
    async def _gone(request, exc):
        return Response(status_code=499)

    async def _read(upload: UploadFile, what="the upload") -> tuple[np.ndarray, bytes | None, np.ndarray | None]:
        """The uploaded image, its colour profile and its alpha plane, which the images answered carry on."""
        data = await upload.read()
        img, alpha = await asyncio.to_thread(decode_image, data, max_pixels, what, with_alpha=True)
        return img, upload_profile(data), alpha

    async def _reply(fmt: str, img, figures: dict, extra: dict, seconds: float, download=None, icc=None, alpha=None):
        """The answer, its images encoded off the event loop (a large PNG takes a while to write)."""
        return await asyncio.to_thread(_answer, fmt, img, figures, extra, seconds, download, icc, alpha)

    def _answer(fmt: str, img, figures: dict, extra: dict, seconds: float, download, icc, alpha):
        figures = {**figures, "seconds": round(seconds, 3)}
        if fmt == "json":
            body = {"image": _data_url(img, icc, alpha), "figures": figures}
            for k, v in extra.items():
                body[k] = (
                    "data:application/octet-stream;base64," + base64.b64encode(v).decode()
                    if isinstance(v, bytes)
                    else _data_url(v, icc, alpha)
                )
            return JSONResponse(body)
        if download is not None:
            return Response(download, media_type="application/octet-stream", headers=_headers(figures))
        return Response(png_bytes(img, icc, alpha), media_type=PNG, headers=_headers(figures))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(ASSETS / "index.html")

    @app.get("/assets/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in {p.name for p in ASSETS.iterdir()}:  # only the shipped files, never a client path
            return JSONResponse({"detail": "no such asset"}, status_code=404)
        return FileResponse(ASSETS / name)

    @app.get("/api/info")
    async def info():
        """Tasks, the classical methods of each (the baselines registry), sample photos and limits."""
        return {
            "version": __version__,
            "methods": {t: ["vae", *available(t)] for t in ("denoise", "inpaint", "compensate")},
            "codecs": ["jpeg", "webp", "avif"],
            "qualities": list(range(1, 9)),
            "samples": list(SAMPLES),
            "max_upload_mb": max_upload_mb,
            "max_pixels": max_pixels,
        }

    @app.get("/api/samples/{name}", response_class=Response, responses={200: {"content": {PNG: {}}}})
    async def sample(name: str):
        """A sample photo: chelsea ships with vaekit; astronaut and coffee come with scikit-image."""
        if name not in SAMPLES:
            return JSONResponse({"detail": f"no sample {name!r}; known: {', '.join(SAMPLES)}"}, status_code=404)
        from .samples import sample_photo

        if name == "chelsea":
            img = sample_photo(name)
        else:
            import skimage.data

            img = getattr(skimage.data, name)()
        return Response(png_bytes(img), media_type=PNG)

    @app.post("/api/denoise", response_class=Response, responses={200: {"content": {PNG: {}}}})
    async def api_denoise(
        request: Request,
        image: UploadFile = File(...),
        sigma: float | None = Form(None),
        method: str = Form("vae"),
        add_sigma: float | None = Form(None),
        seed: int = Form(0),
        strength: float = Form(1.0),
        format: Literal["png", "json"] = "png",
    ):
        """Denoise (blind without ``sigma``, 0-255 scale); ``add_sigma`` first puts Gaussian noise on a clean
        image, and the PSNR against it is reported; ``strength`` 0..1 takes out that share of the noise."""
        img, icc, alpha = await _read(image)
        t0 = time.perf_counter()
        out, fig, extra = await worker.run(
            request,
            lambda: tasks.denoise(img, sigma=sigma, method=method, add_sigma=add_sigma, seed=seed, strength=strength),
        )
        return await _reply(format, out, fig, extra, time.perf_counter() - t0, icc=icc, alpha=alpha)

    @app.post("/api/inpaint", response_class=Response, responses={200: {"content": {PNG: {}}}})
    async def api_inpaint(
        request: Request,
        image: UploadFile = File(...),
        mask: UploadFile | None = File(None),
        detect: str | None = Form(None),
        method: str = Form("vae"),
        samples: int = Form(1),
        seed: int = Form(0),
        format: Literal["png", "json"] = "png",
    ):
        """Fill the pixels where ``mask`` is white (> 127), the scratches found with ``detect=scratches``, or the
        upload's transparent pixels with ``detect=transparent``; ``samples`` > 1 draws that many fills (JSON:
        ``sample_0`` ...)."""
        from . import degrade
        from .tasks.inpaint import DETECT, transparent_holes

        img, icc, alpha = await _read(image)
        if not 1 <= samples <= 16:
            raise VaekitError("samples must be between 1 and 16")
        if detect and detect not in DETECT:
            raise VaekitError(f"detect knows {' and '.join(DETECT)}, not {detect!r}")
        mk = None
        if detect == "transparent":
            if alpha is None:
                raise VaekitError("the upload has no alpha channel: detect=transparent fills transparent pixels")
            mk, alpha = transparent_holes(alpha), None  # the holes are filled: the answer is opaque
            degrade.check_mask(mk)
        if mask is not None:
            m = decode_image(await mask.read(), max_pixels, "the mask")
            m = m.mean(axis=2) if m.ndim == 3 else m
            mk = np.asarray(m) > (127 if np.asarray(m).dtype == np.uint8 else 0.5)
            if mk.shape != img.shape[:2]:
                raise VaekitError(f"the mask is {mk.shape[1]}x{mk.shape[0]}, the image {img.shape[1]}x{img.shape[0]}")
            degrade.check_mask(mk)
        t0 = time.perf_counter()
        out, fig, extra = await worker.run(
            request,
            lambda: tasks.inpaint(img, mk, method=method, samples=samples, seed=seed, detect=detect == "scratches"),
        )
        return await _reply(format, out, fig, extra, time.perf_counter() - t0, icc=icc, alpha=alpha)

    @app.post("/api/compress", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
    async def api_compress(
        request: Request,
        image: UploadFile = File(...),
        quality: int = Form(4),
        effort: int = Form(0),
        compare: bool = Form(False),
        format: Literal["vkc", "json"] = "vkc",
    ):
        """The ``.vkc`` file (``format=json``: with the decoded image, bytes, bpp, PSNR and, with ``compare``,
        JPEG, WebP and AVIF at the same file size); ``effort`` 0..3 as the CLI's."""
        img, icc, alpha = await _read(image)
        t0 = time.perf_counter()
        out, fig, extra = await worker.run(
            request, lambda: tasks.compress(img, quality=quality, compare=compare, effort=effort, icc=icc, alpha=alpha)
        )
        seconds = time.perf_counter() - t0
        return await _reply(format, out, fig, extra, seconds, download=extra["vkc"], icc=icc, alpha=alpha)

    @app.post("/api/decompress", response_class=Response, responses={200: {"content": {PNG: {}}}})
    async def api_decompress(request: Request, image: UploadFile = File(...), format: Literal["png", "json"] = "png"):
        """A ``.vkc`` file (in the field ``image``) decoded to PNG."""
        from .io import split_alpha
        from .tasks.compress import read_header

        data = await image.read()
        t0 = time.perf_counter()
        # the file's colour profile and transparency go into the PNG, as the CLI's
        (out, fig, extra), icc = await worker.run(request, lambda: (tasks.decompress(data), read_header(data).icc))
        out, alpha = split_alpha(out)
        alpha = None if alpha is None else alpha / 255.0
        return await _reply(format, out, fig, extra, time.perf_counter() - t0, icc=icc, alpha=alpha)

    @app.post("/api/compensate", response_class=Response, responses={200: {"content": {PNG: {}}}})
    async def api_compensate(
        request: Request,
        image: UploadFile = File(...),
        method: str = Form("vae"),
        seed: int = Form(0),
        format: Literal["png", "json"] = "png",
    ):
        """Exposure, gamma and colour cast corrected; the values found are in the figures."""
        img, icc, alpha = await _read(image)
        t0 = time.perf_counter()
        out, fig, extra = await worker.run(request, lambda: tasks.compensate(img, method=method, seed=seed))
        return await _reply(format, out, fig, extra, time.perf_counter() - t0, icc=icc, alpha=alpha)

    return UploadLimit(app, int(max_upload_mb * 2**20)), app


def _headers(figures: dict) -> dict:
    """Figures as ``X-Vaekit-Name`` headers (scalars; lists joined by '/'; nested values left to JSON)."""
    out = {}
    for k, v in figures.items():
        if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            v = "/".join(f"{x:.4g}" for x in v)
        elif isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, (dict, list)) or v is None:
            continue
        out["X-Vaekit-" + "-".join(w.capitalize() for w in k.split("_"))] = str(v)
    return out


def serve(host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Run the server until interrupted; a host other than loopback gets a warning."""
    import sys

    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"vaekit: warning: serving on {host}: anyone who can reach this address can upload images and use "
            "this machine's CPU; there is no authentication",
            file=sys.stderr,
        )
    sock = _listening_socket(host, port)
    asgi, _ = create_app(**options)
    print(f"vaekit serve: http://{host}:{port}/  (API schema: /openapi.json; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(asgi, log_level="warning", limit_concurrency=64, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])


def _listening_socket(host: str, port: int):
    """A socket bound to ``host:port`` before anything else starts, so that a port in use (or a host that is
    not this machine's) is one sentence, not a server that announces itself and then dies."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may follow a closed one at once
        sock.bind(addr)
    except OSError as e:
        raise VaekitError(f"cannot listen on {host}:{port}: {e.strerror or e}; give another --port or --host") from None
    return sock
