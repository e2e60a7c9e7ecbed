"""Compress images to ``.vkc`` bytes and back, with a compression VAE.

Large images are coded in independent tiles (``tile`` pixels, a multiple of
64, default 1024), so memory is bounded by the tile, not the image.  Inputs
are padded (edge replication) to a multiple of the model's total stride
inside each tile and cropped after decoding.  Gray images are coded as RGB
with equal channels (or by a gray codec) and come back gray.
"""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..entropy import container
from ..errors import VaekitError
from ..io import as_float_image, max_pixels_default, split_alpha, to_uint8
from ..metrics import hole_psnr

DEFAULT_CODEC = "codec-hyperprior"
DEFAULT_TILE = 1024
# encode effort -> steps of latent search per tile (``CompressionVAE.refine``); 0 is the amortized encoder
EFFORT_STEPS = (0, 20, 50, 100)


def load_codec(model=None, device=None):
    """A compression model: an instance, a shipped name (loaded once per process), a run folder or a
    .safetensors path."""
    from ..models.codec import CompressionVAE
    from ..pretrained import shared_model

    m = (
        shared_model(model or DEFAULT_CODEC)
        if model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__")
        else model
    )
    if not isinstance(m, CompressionVAE):
        raise VaekitError(
            f"model {getattr(m, 'arch', type(m).__name__)!r} is not a compression model "
            "(codec-factorized, codec-scale-hyperprior or codec-mean-scale-hyperprior)"
        )
    m.eval()
    if device is not None:
        m.to(device)
    if m.y_table.numel() == 0:
        m.update()
    return m


def _model_id(model) -> int:
    name = (getattr(model, "card", None) or {}).get("name")
    for k, v in container.MODEL_IDS.items():
        if v == name:
            return k
    return 0


def as_rgb_tensor(image) -> tuple[torch.Tensor, int, np.ndarray | None]:
    """An image as the contract reads it (H x W or H x W x 3, any dtype; with one channel more, its alpha) ->
    ((1, 3, H, W) float in [0, 1], the original channel count, the alpha plane as uint8 or None)."""
    a, layout = as_float_image(image, alpha=True)
    channels = 1 if a.ndim == 2 else 3
    t = torch.from_numpy(np.clip(a, 0, 1).astype(np.float32))
    t = t[None].expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)
    alpha = None if layout.alpha is None else to_uint8(as_float_image(layout.alpha, what="the alpha plane")[0])
    return t[None].contiguous(), channels, alpha


def pad_to_multiple(x, unit: int = container.TILE_UNIT):
    """Edge-replicate x (B, C, H, W) to multiples of ``unit`` (the model's total stride)."""
    h, w = x.shape[-2:]
    ph, pw = -h % unit, -w % unit
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class _Encoder:
    """Encodes one image at any quality and effort; keeps the analysis transform of a single-tile image."""

    def __init__(self, model, x, tile):
        self.model, self.x, self.tile = model, x, tile
        self.device = next(model.parameters()).device
        H, W = x.shape[-2:]
        self.header = container.Header(_model_id(model), model.weights_id(), 0, 0, H, W, tile)
        self._y = {}

    def encode(self, quality: int, effort: int = 0):
        payloads, bits, costs = [], {"z": 0.0, "y": 0.0}, [0.0, 0.0]
        tiles = self.header.tiles()
        for i, (top, left, h, w) in enumerate(tiles):
            xt = pad_to_multiple(self.x[:, :, top : top + h, left : left + w], self.model.pad_unit).to(self.device)
            y = self._y.get(i)
            if y is None:
                y = self.model.g_a(xt)
                if len(tiles) == 1:
                    self._y[i] = y
            z = None
            if effort:
                (y, z), (before, after) = self.model.refine(xt, quality - 1, EFFORT_STEPS[effort], y=y, valid=(h, w))
                costs[0], costs[1] = costs[0] + before * h * w, costs[1] + after * h * w
            r = self.model.compress(xt, quality - 1, y=y, z=z)
            payloads.append(r["strings"][0])
            for k, v in r["bits"].items():
                bits[k] += v
        return payloads, bits, (100 * (costs[1] / costs[0] - 1) if effort else 0.0)


def _check_effort(effort):
    if not isinstance(effort, numbers.Integral) or effort not in range(len(EFFORT_STEPS)):
        raise VaekitError(f"effort must be an integer from 0 to {len(EFFORT_STEPS) - 1}, got {effort!r}")


@torch.no_grad()
def compress_info(
    image,
    quality: int | None = 4,
    *,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    effort: int = 0,
    model=None,
    tile: int = DEFAULT_TILE,
    device=None,
    icc: bytes | None = None,
) -> tuple[bytes, dict]:
    """Like :func:`compress`, and also return what happened (quality, ideal bits, seconds)."""
    t0 = time.perf_counter()
    m = load_codec(model, device)
    x, channels, alpha = as_rgb_tensor(image)
    H, W = x.shape[-2:]
    if H * W > max_pixels_default():
        raise VaekitError(
            f"image of {W}x{H} pixels is over the limit of {max_pixels_default()} (raise VAEKIT_MAX_PIXELS to allow it)"
        )
    if tile % container.TILE_UNIT or not 0 < tile <= container.MAX_TILE:
        raise VaekitError(
            f"tile must be a positive multiple of {container.TILE_UNIT}, at most {container.MAX_TILE}, got {tile}"
        )
    _check_effort(effort)
    if alpha is not None and (alpha == 255).all():  # opaque everywhere (many RGBA files are): nothing to keep
        alpha = None
    if alpha is not None and (alpha == 0).any():  # colour no one sees: a smooth fill costs fewer bits (as WebP does)
        from ..models.inpainter import push_pull

        x = push_pull(x, torch.from_numpy(alpha == 0)[None, None].to(x.dtype))
    if m.channels == 1:  # a gray codec (trained with image_mode L) codes the luminance
        x = x.mean(1, keepdim=True)
    Q = m.qualities
    enc = _Encoder(m, x, tile)
    enc.header.channels, enc.header.icc = channels, icc or None
    enc.header.alpha = None if alpha is None else container.alpha_png(alpha)

    def run(q, e=0):
        enc.header.quality = q
        payloads, bits, gain = enc.encode(q, e)
        bits["payload"] = 8 * sum(map(len, payloads))
        return container.pack(enc.header, payloads), bits, gain

    if target_bpp is not None and target_psnr is not None:
        raise VaekitError("give target_bpp or target_psnr, not both")
    if target_bpp is not None or target_psnr is not None:
        if target_bpp is not None and not target_bpp > 0:
            raise VaekitError(f"--target-bpp must be positive, got {target_bpp}")
        if target_psnr is not None and not 0 < target_psnr < 100:
            raise VaekitError(f"--target-psnr must be a PSNR in dB between 0 and 100, got {target_psnr}")
        if target_bpp is not None:  # the largest quality whose real file fits (the rate grows with quality)
            largest, fallback = True, 1

            def ok(data):
                return 8 * len(data) / (H * W) <= target_bpp
        else:  # the smallest quality whose decoded pixels reach it (where the image shows, with an alpha plane)
            largest, fallback = False, Q
            ref = np.round(x[0].permute(1, 2, 0).numpy() * 255.0)
            seen = np.ones((H, W), bool) if alpha is None else alpha > 0

            def ok(data):
                dec = split_alpha(decompress(data, model=m))[0].astype(np.float64).reshape(H, W, -1)
                measured[data] = hole_psnr(dec, ref[..., : dec.shape[2]], seen)
                return measured[data] >= target_psnr

        lo, hi, best, measured = 1, Q, None, {}
        while lo <= hi:
            mid = (lo + hi) // 2
            found = run(mid)
            if ok(found[0]):
                best = (mid, *found)
                lo, hi = (mid + 1, hi) if largest else (lo, mid - 1)
            else:
                lo, hi = (lo, mid - 1) if largest else (mid + 1, hi)
        target_met = best is not None
        if best is None:
            best = (fallback, *run(fallback))
            if target_psnr is not None:
                ok(best[1])  # its PSNR, reported
        used = 0
        if effort:  # the search runs at effort 0; the refined file replaces it where it still meets the target
            refined = run(best[0], effort)
            if not target_met or ok(refined[0]):
                best, used = (best[0], *refined), effort
        quality, data, bits, gain = best
        psnr = measured.get(data)
    else:
        if not isinstance(quality, numbers.Integral) or not 1 <= quality <= Q:
            raise VaekitError(f"quality must be an integer from 1 to {Q}, got {quality!r}")
        quality, target_met, used, psnr = int(quality), None, effort, None
        data, bits, gain = run(quality, effort)
    info = {
        "quality": quality,
        "qualities": Q,
        "bytes": len(data),
        "bpp": 8 * len(data) / (H * W),
        "ideal_bits": bits["z"] + bits["y"],
        "ideal_bits_z": bits["z"],
        "ideal_bits_y": bits["y"],
        "payload_bits": bits["payload"],
        "alpha_bits": 8 * len(enc.header.alpha or b""),
        "tiles": enc.header.n_tiles(),
        "target_met": target_met,
        "psnr": psnr,  # dB where --target-psnr measured it, else None
        "effort": used,
        "effort_cost_change_pct": gain,
        "seconds": time.perf_counter() - t0,
    }
    return data, info


def compress(
    image,
    quality: int | None = 4,
    *,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    effort: int = 0,
    model=None,
    tile: int = DEFAULT_TILE,
    device=None,
    icc: bytes | None = None,
) -> bytes:
    """Compress an image to ``.vkc`` bytes.

    Parameters
    ----------
    image : H x W or H x W x 3, in any dtype the task contract reads (floats in [0, 1]); with one channel more
        (H x W x 2 or 4) the last is an alpha plane, kept losslessly at 8 bits (a version 3 file) unless it is
        opaque everywhere; the colour under fully transparent pixels is not kept (a smooth fill is coded there,
        as WebP does)
    quality : int, 1 (smallest file) .. the model's number of qualities (8 for the shipped codec)
    target_bpp : float, optional
        Bits per pixel (file size included) to stay under: the largest quality that fits is
        chosen (quality 1 if none does).
    target_psnr : float, optional
        PSNR (dB, 8-bit, over the pixels that show) to reach: the smallest quality whose decoded image reaches it
        is chosen (the top quality if none does); each quality tried is decoded once.
    effort : int, 0 (the amortized encoder, fastest) .. 3: steps of a search over this image's latents
        against its rate-distortion cost (``EFFORT_STEPS``); the decoder is the same
    model : shipped name, run folder, weights path or model; default the shipped codec
    tile : int, tile size in pixels (multiple of 64); part of the file
    device : torch device for the transforms (the coder and the hyper-synthesis always run on the CPU)
    icc : the image's ICC colour profile, kept in the file (``read_header(data).icc``); None: sRGB
    """
    return compress_info(
        image,
        quality,
        target_bpp=target_bpp,
        target_psnr=target_psnr,
        effort=effort,
        model=model,
        tile=tile,
        device=device,
        icc=icc,
    )[0]


def read_header(data: bytes) -> container.Header:
    """A ``.vkc`` file's header, checked: size, quality, tiles, and its colour profile (``icc``, None: sRGB)."""
    return container.unpack(data, max_pixels_default())[0]


def describe(data: bytes) -> dict:
    """What a ``.vkc`` file holds, read from its checked header without decoding (``vaekit decompress --info``):
    format version, size, quality, the codec that wrote it, tiles, bytes and bpp, colour profile, alpha plane."""
    from ..io import profile_name

    h = read_header(data)
    return {
        "version": data[4],
        "width": h.width,
        "height": h.height,
        "channels": h.channels,
        "quality": h.quality,
        "model": container.MODEL_IDS.get(h.model_id),  # None: a local model, named with --model to decode
        "model_id": h.model_id,
        "weights_id": h.weights_id.hex(),
        "tile": h.tile,
        "tiles": h.n_tiles(),
        "bytes": len(data),
        "bpp": 8 * len(data) / (h.width * h.height),
        "profile": None if h.icc is None else (profile_name(h.icc) or "unreadable ICC profile"),
        "alpha_bytes": None if h.alpha is None else len(h.alpha),
    }


@torch.no_grad()
def decompress(data: bytes, *, model=None, dtype=torch.float32, return_latents: bool = False, device=None):
    """``.vkc`` bytes -> uint8 image, H x W (gray) or H x W x 3; with the file's alpha plane as one channel more
    (H x W x 2 or 4) where it has one.

    ``model`` is needed only for files written by a local (unshipped) model.
    ``dtype`` runs the synthesis transform in another precision (testing)."""
    header, payloads = container.unpack(data, max_pixels_default())
    if model is None:
        name = container.MODEL_IDS.get(header.model_id)
        if name is None:
            raise VaekitError(
                "this file was written by a local model (id 0) or a newer vaekit: "
                "pass the model that wrote it (--model)"
            )
        model = name
    m = load_codec(model, device)
    if m.weights_id() != header.weights_id:
        raise VaekitError(
            f"this file was written with weights {header.weights_id.hex()}, "
            f"but the model given has weights {m.weights_id().hex()}"
        )
    if not 1 <= header.quality <= m.qualities:
        raise VaekitError(f"corrupted .vkc file: quality {header.quality} (the model has 1..{m.qualities})")
    alpha = container.alpha_plane(header)  # before the tiles: a damaged plane is refused at once
    out = np.empty((header.height, header.width, 3), dtype=np.uint8)
    latents, workers, device = [], torch.get_num_threads(), next(m.parameters()).device
    for (top, left, h, w), payload in zip(header.tiles(), payloads):
        ph, pw = h + (-h % m.pad_unit), w + (-w % m.pad_unit)
        shape = (ph // 16, pw // 16) if m.prior == "factorized" else (ph // 64, pw // 64)
        r = m.decompress([payload], shape, header.quality - 1, dtype=dtype, device=device, workers=workers)
        x_hat = r["x_hat"][0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
        out[top : top + h, left : left + w] = x_hat.permute(1, 2, 0).cpu().numpy()
        if return_latents:
            latents.append(r["latents"])
    if header.channels == 1:
        out = np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)
    if alpha is not None:
        out = np.concatenate([out.reshape(*out.shape[:2], -1), alpha[..., None]], axis=2)
    return (out, latents) if return_latents else out


def _files(src, suffixes):
    from pathlib import Path

    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise VaekitError(f"{src} is neither a file nor a folder")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise VaekitError(f"no {'/'.join(sorted(suffixes))} files under {src}")
    return files


def compress_paths(
    src,
    dst,
    *,
    quality=4,
    target_bpp=None,
    target_psnr=None,
    effort=0,
    model=None,
    tile=DEFAULT_TILE,
    device=None,
    shard=None,
    overwrite=False,
    progress=False,
):
    """Compress a file or a folder (mirrored names, ``.vkc``) through :func:`vaekit.batch.run`
    (sharded, resumable, a manifest); returns its :class:`~vaekit.batch.Summary`."""
    from pathlib import Path

    from .. import batch
    from ..data import IMAGE_SUFFIXES
    from ..io import atomic_write_text, read_array, source_format

    _check_effort(effort)
    items = batch.plan(src, dst, _files(src, IMAGE_SUFFIXES), lambda rel: rel.with_suffix(".vkc"), check=_vkc_name)
    m = load_codec(model, device)

    def read(it):
        img = read_array(it.input, alpha="keep")  # an alpha plane travels in the file, losslessly
        source = source_format(it.input)
        if source.bits > 8:  # the codec's files hold 8 bits per sample
            warnings.warn(f"{it.input}: coded at 8 bits per sample; the finer levels are lost", stacklevel=2)
        icc = source.icc if source.foreign_profile else None  # an sRGB profile is what no profile means: not stored
        return img, icc

    def work(it, read_out):
        img, icc = read_out
        data, info = compress_info(
            img, quality, target_bpp=target_bpp, target_psnr=target_psnr, effort=effort, model=m, tile=tile, icc=icc
        )
        it.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(it.output, data)
        return [it.output], info

    settings = batch.settings_of(
        quality=quality, target_bpp=target_bpp, target_psnr=target_psnr, effort=effort, model=model, tile=tile
    )
    opts = {"settings": settings, "shard": shard, "overwrite": overwrite, "progress": progress}
    return batch.run(items, work, read=read, out=dst, folder=Path(src).is_dir(), **opts)


def vkc_files(src) -> list:
    """The ``.vkc`` file ``src``, or those under the folder ``src`` (sorted); one sentence if there are none."""
    return _files(src, {".vkc"})


def _vkc_name(path):
    if path.suffix.lower() != ".vkc":
        raise VaekitError(f"-o {path}: compress writes .vkc files; give a name ending in .vkc")


def decompress_paths(src, dst, *, model=None, device=None, shard=None, overwrite=False, progress=False):
    """Decompress a ``.vkc`` file or a folder of them to PNG (mirrored names; a single file in the format its
    output name gives), as :func:`compress_paths`."""
    from pathlib import Path

    from .. import batch
    from ..io import check_output_name, split_alpha, write_image

    items = batch.plan(src, dst, vkc_files(src), lambda rel: rel.with_suffix(".png"), check=check_output_name)

    def work(it, data):
        img, alpha = split_alpha(decompress(data, model=model, device=device))
        write_image(it.output, img, icc=read_header(data).icc, alpha=None if alpha is None else alpha / 255.0)
        return [it.output], {"shape": list(img.shape), "alpha": alpha is not None}

    return batch.run(
        items,
        work,
        read=lambda it: Path(it.input).read_bytes(),
        out=dst,
        folder=Path(src).is_dir(),
        settings=batch.settings_of(model=model),
        shard=shard,
        overwrite=overwrite,
        progress=progress,
    )
