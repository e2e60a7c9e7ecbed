"""Image reading and writing with clear errors and size limits.

``read_image`` turns any PNG / JPEG / TIFF / WebP / BMP that Pillow reads
(gray, RGB, RGBA, palette, 8- or 16-bit, float TIFF) or a ``.npy`` float
array into a float32 tensor (C, H, W) in [0, 1], EXIF orientation applied.
``write_image`` writes atomically (temp name, then rename) in the format its name ends with: PNG or TIFF, 16-bit
where :func:`source_format` says the input had more than 8 bits, so that restoring a 16-bit scan does not truncate it;
lossless WebP, BMP, or JPEG at quality 95 without chroma subsampling (8 bits).  The input's colour profile
(:class:`SourceFormat`) and transparency (:func:`read_with_alpha`) go back into the output, so that a Display P3
photo or a cut-out looks as it did.

:func:`as_float_image` / :func:`restore_layout` are the one image-coercion contract of the task API: any
numpy image (H x W, H x W x 1 or H x W x 3; uint8, uint16, 0..255 integers or float in [0, 1] units; a tensor is
accepted) goes in as float64 in [0, 1] units, and a result goes back in the dtype and shape that came in.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import VaekitError

DEFAULT_MAX_PIXELS = 100_000_000
# Our own limit is checked before decoding; Pillow's bomb check would only warn differently.
Image.MAX_IMAGE_PIXELS = None


def max_pixels_default() -> int:
    env = os.environ.get("VAEKIT_MAX_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise VaekitError(f"VAEKIT_MAX_PIXELS={env!r} is not a number") from None
    return DEFAULT_MAX_PIXELS


def check_pixels(path, w, h, max_pixels):
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    if w * h > limit:
        raise VaekitError(
            f"{path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
            f"{limit / 1e6:g} megapixels; raise it with --max-pixels or VAEKIT_MAX_PIXELS"
        )


def _to_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.int32) or arr.dtype == np.dtype(">u2"):
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    return arr.astype(np.float32)  # float data is taken as already on the [0, 1] scale


def _pil_to_array(im: Image.Image, path, alpha: str) -> np.ndarray:
    """(H, W) or (H, W, C) array, floats in [0, 1] (float TIFF keeps its values)."""
    if im.mode == "P" or im.mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or im.mode == "PA") else "RGB")
    elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("L" if im.mode == "1" else "RGB")
    elif im.mode == "LA":
        pass
    elif im.mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
        return _to_float(arr)
    elif im.mode == "I":
        arr = np.asarray(im)
        return arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if a.size and np.isfinite(a).all() and np.abs(a).max() > FLOAT_LIMIT:
            raise VaekitError(
                f"{path} holds floats from {a.min():g} to {a.max():g}, but a float image file is read in [0, 1] "
                "units: save it scaled to [0, 1], or as an 8- or 16-bit image"
            )
        return a
    return _drop_alpha(_to_float(np.asarray(im)), path, alpha)


def _deep_color(im: Image.Image) -> bool:
    """True for color images with more than 8 bits per sample, which Pillow
    would truncate to 8 bits (16-bit RGB(A) PNG, 16-bit / float RGB TIFF)."""
    if im.format == "PNG":
        return im.mode in ("RGB", "RGBA") and _png_bit_depth(im) == 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) > 8 and int(im.tag_v2.get(277, 1)) > 1
    return False


def _png_bit_depth(im: Image.Image) -> int:
    fp = im.fp
    pos = fp.tell()
    try:
        fp.seek(24)  # 8-byte signature, IHDR length + type, width, height, then the bit depth
        return fp.read(1)[0]
    finally:
        fp.seek(pos)


def _decode_deep(path, fmt: str) -> np.ndarray:
    import imagecodecs

    data = Path(path).read_bytes()
    try:
        arr = imagecodecs.png_decode(data) if fmt == "PNG" else imagecodecs.tiff_decode(data)
    except Exception as e:  # noqa: BLE001 - codec errors come in several types
        raise VaekitError(f"{path} is truncated or corrupted: {e}") from None
    return _to_float(np.asarray(arr))


def _orient(arr: np.ndarray, im: Image.Image) -> np.ndarray:
    """Apply the EXIF orientation tag to an (H, W[, C]) array, as exif_transpose does."""
    o = im.getexif().get(0x0112, 1)
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[o](arr)) if o in ops else arr


def _drop_alpha(arr: np.ndarray, path, alpha: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        if alpha == "keep":
            return arr
        if alpha != "drop":
            raise ValueError("alpha must be 'drop' or 'keep'")
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=4)
        return arr[..., :-1]
    return arr


def _finite(a: np.ndarray, path) -> np.ndarray:
    """Float files may hold NaN or Inf: refused here, once for every command."""
    if not np.isfinite(a).all():
        raise VaekitError(f"{path} holds NaN or infinite values")
    return a


def read_with_alpha(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(the colour or gray image, its alpha plane or None) of a file, both float32 in [0, 1]: for the commands
    that hand the transparency back unchanged around what they did to the pixels."""
    return split_alpha(read_array(path, alpha="keep", max_pixels=max_pixels))


def split_alpha(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """An H x W x 2 or 4 array as (its gray or RGB channels, its alpha plane); any other as (itself, None)."""
    if a.ndim == 3 and a.shape[2] in (2, 4):
        return (a[..., 0] if a.shape[2] == 2 else a[..., :3]), a[..., -1]
    return a, None


def read_array(path: str | os.PathLike, *, alpha: str = "drop", max_pixels: int | None = None) -> np.ndarray:
    """Read an image file into a float32 array (H, W) or (H, W, C) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise VaekitError(f"{path} is not a readable .npy array: {e}") from None
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
            raise VaekitError(f"{path}: a .npy image must be (H, W) or (H, W, C), got shape {arr.shape}")
        check_pixels(path, arr.shape[1], arr.shape[0], max_pixels)
        return _finite(_to_float(np.array(arr)), path)
    try:
        with Image.open(path) as im:
            check_pixels(path, im.width, im.height, max_pixels)
            frames = getattr(im, "n_frames", 1) if im.format != "MPO" else 1  # MPO: a camera JPEG and its previews
            if frames > 1:
                warnings.warn(f"{path}: {frames} frames (an animation or pages); only the first is read", stacklevel=2)
            if _deep_color(im):
                return _finite(_drop_alpha(_orient(_decode_deep(path, im.format), im), path, alpha), path)
            im = ImageOps.exif_transpose(im)
            im.load()
            return _pil_to_array(im, path, alpha)
    except UnidentifiedImageError:
        raise VaekitError(f"{path} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VaekitError(f"{path} is truncated or corrupted: {e}") from None


def read_image(
    path: str | os.PathLike, *, mode: str | None = None, alpha: str = "drop", max_pixels: int | None = None
) -> torch.Tensor:
    """Read an image as a float32 tensor (C, H, W) in [0, 1].

    Parameters
    ----------
    mode : None keeps the file's channels; "L" converts to gray (ITU-R 601
        luma), "RGB" replicates gray to three channels.
    alpha : "drop" (with a warning) or "keep" an alpha channel.
    max_pixels : refuse larger images before decoding (default 100 MP, or
        the environment variable VAEKIT_MAX_PIXELS).
    """
    arr = read_array(path, alpha=alpha, max_pixels=max_pixels)
    t = torch.from_numpy(np.array(arr, dtype=np.float32))  # own, writable copy
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    return convert_channels(t, mode)


def convert_channels(t: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Convert a (C, H, W) tensor to gray ("L") or "RGB"; None leaves it."""
    if mode is None:
        return t
    c = t.shape[0]
    if mode == "L":
        if c == 1:
            return t
        w = torch.tensor([0.299, 0.587, 0.114], dtype=t.dtype).view(3, 1, 1)
        return (t[:3] * w).sum(0, keepdim=True)
    if mode == "RGB":
        if c == 1:
            return t.expand(3, -1, -1).contiguous()
        return t[:3]
    raise ValueError(f"mode must be None, 'L' or 'RGB', not {mode!r}")


class ImageLayout:
    """What :func:`restore_layout` needs to give a result the caller's dtype and shape: and the alpha plane it
    hands back, for an image that came with one."""

    __slots__ = ("dtype", "shape", "alpha")

    def __init__(self, dtype, shape, alpha=None):
        self.dtype, self.shape, self.alpha = np.dtype(dtype), tuple(shape), alpha


FLOAT_LIMIT = 16.0  # a float image beyond this is in other units (0..255, say), not a noisy [0, 1] one


def as_float_image(
    img, *, channels=(1, 3), what: str = "the image", alpha: bool = False
) -> tuple[np.ndarray, ImageLayout]:
    """``img`` as float64 (H, W) or (H, W, C) in [0, 1] units (floats kept as they are, not clipped), and its
    layout.  ``channels``: the channel counts the caller accepts (an H x W x 1 image counts as 1); ``alpha``: an
    image with one channel more (gray or RGB with alpha) is accepted, its alpha kept in the layout for
    :func:`restore_layout` to hand back unchanged."""
    tensor = isinstance(img, torch.Tensor)
    if tensor:
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    layout = ImageLayout(a.dtype, a.shape)
    if alpha and a.ndim == 3 and a.shape[2] - 1 in channels:
        a, layout.alpha = split_alpha(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    c = 1 if a.ndim == 2 else (a.shape[2] if a.ndim == 3 else 0)
    if a.ndim not in (2, 3) or c not in channels or min(a.shape[:2]) < 1:
        want = " or ".join("H x W" if k == 1 else f"H x W x {k}" for k in channels)
        hint = ""
        if tensor and a.ndim == 3 and a.shape[0] in channels and a.shape[0] < min(a.shape[1:]):
            hint = " (a C x H x W tensor: give img.permute(1, 2, 0))"
        raise VaekitError(f"{what} must be {want}, not of shape {layout.shape}{hint}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0, layout
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0, layout
    if a.dtype == bool:
        return a.astype(np.float64), layout
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise VaekitError(f"integer images must hold 0..255 (or be uint16); {what} holds {a.min()}..{a.max()}")
        return a.astype(np.float64) / 255.0, layout
    if not np.issubdtype(a.dtype, np.floating):
        raise VaekitError(f"{what} has the unsupported dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise VaekitError(f"{what} holds NaN or infinite values")
    if a.size and np.abs(a).max() > FLOAT_LIMIT:  # noise at sigma 255 leaves a [0, 1] image within about +-6
        raise VaekitError(
            f"{what} holds floats from {a.min():g} to {a.max():g}, but float images are in [0, 1] units: "
            "divide a 0..255 image by 255, or pass it as uint8"
        )
    return a.astype(np.float64), layout


def restore_layout(a, layout: ImageLayout, *, clip: bool = True) -> np.ndarray:
    """A float result in [0, 1] units back to the dtype and shape of the input ``layout`` describes (integers
    rounded and clipped; floats clipped to [0, 1] unless ``clip=False``)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and (layout.alpha is not None or (len(layout.shape) == 3 and layout.shape[2] == 1)):
        a = a[..., None]
    dt = layout.dtype
    if dt == np.uint16:
        out = np.round(np.clip(a, 0, 1) * 65535.0).astype(np.uint16)
    elif dt == np.dtype(bool):
        out = np.clip(a, 0, 1) >= 0.5
    elif np.issubdtype(dt, np.integer):
        out = np.round(np.clip(a, 0, 1) * 255.0).astype(dt)
    else:
        out = (np.clip(a, 0, 1) if clip else a).astype(dt)
    if layout.alpha is not None:  # the transparency goes back as it came
        out = np.concatenate([out, layout.alpha[..., None].astype(dt)], axis=2)
    return out


def _hwc(img) -> np.ndarray:
    """Tensor (C, H, W) / (B=1, ...) or array (H, W[, C]) -> array (H, W[, C])."""
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu().float()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected one image, not a batch of {t.shape[0]}")
            t = t[0]
        return t.permute(1, 2, 0).numpy() if t.ndim == 3 else t.numpy()
    return np.asarray(img)


def _samples(arr: np.ndarray, dtype, top: float) -> np.ndarray:
    out = arr if arr.dtype == dtype else (np.clip(arr.astype(np.float32), 0.0, 1.0) * top + 0.5).astype(dtype)
    return out[..., 0] if out.ndim == 3 and out.shape[2] == 1 else out


def to_uint8(img) -> np.ndarray:
    """Tensor (C, H, W) / (B=1, ...) or array (H, W[, C]) in [0, 1] -> uint8 (H, W[, C])."""
    return _samples(_hwc(img), np.uint8, 255.0)


def to_uint16(img) -> np.ndarray:
    """As :func:`to_uint8`, to uint16 (full scale 65535; uint8 input is scaled by 257)."""
    arr = _hwc(img)
    return _samples(arr.astype(np.uint16) * 257 if arr.dtype == np.uint8 else arr, np.uint16, 65535.0)


def check_output_path(path: str | os.PathLike) -> None:
    """Refuse an output path that cannot be written, before any work: under a regular file, or in a folder that
    is not writable.  (The leaf may be a file or a folder; the writers decide which.)"""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.exists():
            if parent != p and not parent.is_dir():
                raise VaekitError(f"cannot write {p}: {parent} is a file, not a folder")
            folder = parent if parent.is_dir() else parent.parent
            if not os.access(folder, os.W_OK):
                raise VaekitError(f"cannot write {p}: {folder} is not writable")
            return


TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def host_tag() -> str:
    """Eight hex digits naming this host in temporary names (so a cleaner knows whose writers it can check)."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """A unique hidden name beside ``path`` (writers may race), matching ``TEMP_PATTERN``."""
    return path.with_name(f".{path.name}.{host_tag()}-{os.getpid()}.{os.urandom(4).hex()}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write text (or bytes) under a temporary name, then rename: never a half-written file."""
    path = Path(path)
    tmp = temp_path(path)
    if isinstance(text, (bytes, bytearray)):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class SourceFormat:
    """What an output made from an input file keeps of it: ``bits`` per sample (8 or 16) and ``icc``, the colour
    profile embedded in it (None: none), so that a Display P3 or Adobe RGB photo keeps its colours."""

    bits: int = 8
    icc: bytes | None = None

    @property
    def written(self) -> tuple:
        """(bits, icc): :func:`write_image`'s arguments for an output that keeps them."""
        return self.bits, self.icc

    @property
    def foreign_profile(self) -> bool:
        """True where the file's colours are not plain sRGB (a profile other than sRGB is embedded)."""
        return bool(self.icc) and "srgb" not in (profile_name(self.icc) or "").lower()


def profile_name(icc: bytes) -> str | None:
    """The description an ICC profile gives itself ("Display P3"), or None where it cannot be read."""
    from PIL import ImageCms

    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (OSError, ImageCms.PyCMSError):
        return None


def source_format(path: str | os.PathLike) -> SourceFormat:
    """The :class:`SourceFormat` of the file at ``path``: 16 bits for 16-bit PNG / TIFF, float TIFF and uint16 or
    float ``.npy`` (more than 8 bits of precision), else 8; its ICC profile, if any."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        deep = np.load(path, mmap_mode="r", allow_pickle=False).dtype not in (np.uint8, bool)
        return SourceFormat(16 if deep else 8)
    with Image.open(path) as im:
        deep = im.mode.startswith("I;16") or im.mode in ("I", "F") or _deep_color(im)
        return SourceFormat(16 if deep else 8, im.info.get("icc_profile") or None)


def _png_with_icc(data: bytes, icc: bytes) -> bytes:
    """A PNG stream with the colour profile as an iCCP chunk after its IHDR (imagecodecs writes none)."""
    body = b"icc\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    end = 8 + 8 + 13 + 4  # signature, then IHDR's length, type, 13 bytes and CRC
    return data[:end] + chunk + data[end:]


# Output formats by file suffix; the 16-bit ones keep a deep input's levels.
WRITE_FORMATS = {
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
}
DEEP_FORMATS = {"PNG", "TIFF"}
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}


def check_output_name(path: str | os.PathLike, flag: str = "-o") -> Path:
    """``path`` if :func:`write_image` can write its suffix, else one sentence that names the choices."""
    path = Path(path)
    if path.suffix.lower() not in WRITE_FORMATS:
        choices = ", ".join(sorted(WRITE_FORMATS))
        raise VaekitError(f"{flag} {path}: images are written as {choices}; give a name ending in one of them")
    return path


def encode_image(
    img, fmt: str, bits: int = 8, icc: bytes | None = None, alpha: np.ndarray | None = None, name="the image"
) -> bytes:
    """An image's bytes in ``fmt`` (a ``WRITE_FORMATS`` value), ``bits`` 8 or 16 per sample (16 in PNG and TIFF
    only; the others get 8 with a warning naming ``name``), with the colour profile ``icc`` (BMP holds none) and
    the transparency ``alpha`` (an H x W plane in [0, 1]; PNG, TIFF and WebP hold it, the others are written
    opaque with a warning)."""
    import imagecodecs

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    if bits == 16 and fmt not in DEEP_FORMATS:
        warnings.warn(f"{name}: {fmt} holds 8 bits per sample; write PNG or TIFF to keep 16", stacklevel=3)
        bits = 8
    if alpha is not None and fmt not in ALPHA_FORMATS:
        warnings.warn(f"{name}: {fmt} holds no transparency; write PNG, TIFF or WebP to keep it", stacklevel=3)
    elif alpha is not None:
        a = as_float_image(_hwc(img))[0]
        a = a.reshape(*a.shape[:2], -1)
        if fmt == "WEBP" and a.shape[2] == 1:  # WebP has no gray with alpha
            a = np.repeat(a, 3, axis=2)
        img = np.concatenate([a, np.asarray(alpha, np.float64)[..., None]], axis=2)
    if bits == 16 and fmt == "PNG":  # Pillow writes no 16-bit colour PNG
        data = imagecodecs.png_encode(np.ascontiguousarray(to_uint16(img)))
        return _png_with_icc(data, icc) if icc else data
    if fmt == "TIFF":
        a = to_uint16(img) if bits == 16 else to_uint8(img)
        profile = {"iccprofile": icc} if icc else {}
        return imagecodecs.tiff_encode(np.ascontiguousarray(a), compression="deflate", **profile)
    opts = {"WEBP": {"lossless": True}, "JPEG": {"quality": 95, "subsampling": 0}}.get(fmt, {})
    if icc and fmt != "BMP":
        opts["icc_profile"] = icc
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format=fmt, **opts)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike, img, bits: int = 8, icc: bytes | None = None, alpha: np.ndarray | None = None
) -> Path:
    """Write an image atomically in the format its suffix names (``WRITE_FORMATS``), as :func:`encode_image`
    gives it; parent folders are created."""
    path = check_output_name(path)
    data = encode_image(img, WRITE_FORMATS[path.suffix.lower()], bits, icc, alpha, name=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, data)


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile a batch (B, C, H, W) into one image (C, H', W'), ``nrow`` images per row."""
    b, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / nrow))
    out = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(b):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[:, y : y + h, x : x + w] = images[i]
    return out


def upscale(img: torch.Tensor, factor: int = 3) -> torch.Tensor:
    """Nearest-neighbour enlargement of a (..., H, W) tensor, for viewing small images."""
    return img.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
