"""Classical enhancement primitives, composable and seeded.

Every primitive takes and returns a float32 array in [0, 1], H x W (gray) or
H x W x C, and keyword-only parameters with units in the docstring.  The
random variants draw their parameters from a ``numpy.random.Generator`` so a
seed reproduces them.  ``apply_ops`` runs a comma list such as
``"contrast=1.5,sharpen,denoise"``, each operation at its default strength or at the one given.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import VaekitError


def _check(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise VaekitError(f"expected an H x W or H x W x C image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _per_channel(fn, a):
    return fn(a) if a.ndim == 2 else np.stack([fn(a[..., c]) for c in range(a.shape[2])], axis=2)


def contrast(img, *, factor: float = 1.3) -> np.ndarray:
    """Scale deviations from the mean grey level by ``factor`` (1 = unchanged)."""
    a = _check(img)
    m = a.mean()
    return np.clip((a - m) * factor + m, 0, 1)


def sharpen(img, *, amount: float = 0.8, radius: float = 1.0) -> np.ndarray:
    """Unsharp mask: add ``amount`` x (image - Gaussian blur of ``radius`` pixels)."""
    a = _check(img)
    blur = _per_channel(lambda c: ndimage.gaussian_filter(c, radius), a)
    return np.clip(a + amount * (a - blur), 0, 1)


def erode(img, *, size: int = 2) -> np.ndarray:
    """Grey-level erosion with a ``size`` x ``size`` square (thins bright strokes)."""
    a = _check(img)
    return _per_channel(lambda c: ndimage.grey_erosion(c, size=(size, size)), a)


def dilate(img, *, size: int = 2) -> np.ndarray:
    """Grey-level dilation with a ``size`` x ``size`` square (thickens bright strokes)."""
    a = _check(img)
    return _per_channel(lambda c: ndimage.grey_dilation(c, size=(size, size)), a)


def saturation(img, *, factor: float = 1.3) -> np.ndarray:
    """Scale the colour away from (factor > 1) or towards (< 1) the luminance; gray images are unchanged."""
    a = _check(img)
    if a.ndim == 2 or a.shape[2] < 3:
        return a
    lum = (a[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    out = a.copy()
    out[..., :3] = np.clip(lum + factor * (a[..., :3] - lum), 0, 1)
    return out


def denoise(img, *, size: int = 3) -> np.ndarray:
    """Median filter of ``size`` x ``size`` pixels (robust to impulse noise; a classical stand-in)."""
    a = _check(img)
    return _per_channel(lambda c: ndimage.median_filter(c, size=size), a)


def affine(img, *, degrees: float = 0.0, translate=(0.0, 0.0), scale: float = 1.0, fill: float = 0.0) -> np.ndarray:
    """Rotate by ``degrees`` (counter-clockwise), scale by ``scale`` about the centre, then shift by
    ``translate`` = (dx, dy) pixels; bilinear, outside pixels set to ``fill``."""
    a = _check(img)
    h, w = a.shape[:2]
    t = np.deg2rad(degrees)
    # output (row, col) -> input (row, col): inverse of rotate+scale about the centre, then shift
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / scale
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    shift = np.array([translate[1], translate[0]])
    offset = centre - rot @ (centre + shift)
    return _per_channel(
        lambda c: ndimage.affine_transform(c, rot, offset=offset, order=1, mode="constant", cval=fill), a
    ).astype(np.float32)


def rotate(img, *, degrees: float = 10.0, fill: float = 0.0) -> np.ndarray:
    return affine(img, degrees=degrees, fill=fill)


def translate(img, *, dx: float = 2.0, dy: float = 0.0, fill: float = 0.0) -> np.ndarray:
    return affine(img, translate=(dx, dy), fill=fill)


def scale(img, *, factor: float = 1.1, fill: float = 0.0) -> np.ndarray:
    return affine(img, scale=factor, fill=fill)


def random_affine(
    img,
    rng: np.random.Generator,
    *,
    degrees: float = 15.0,
    shift: float = 2.0,
    scale_range=(0.9, 1.1),
    fill: float = 0.0,
) -> np.ndarray:
    """A random rotation in +-``degrees``, shift in +-``shift`` px and scale in ``scale_range``."""
    return affine(
        img,
        degrees=float(rng.uniform(-degrees, degrees)),
        translate=(float(rng.uniform(-shift, shift)), float(rng.uniform(-shift, shift))),
        scale=float(rng.uniform(*scale_range)),
        fill=fill,
    )


OPS = {
    "contrast": contrast,
    "sharpen": sharpen,
    "erode": erode,
    "dilate": dilate,
    "saturation": saturation,
    "color": saturation,
    "denoise": denoise,
    "rotate": rotate,
    "translate": translate,
    "scale": scale,
}


GEOMETRIC = ("rotate", "translate", "scale")  # the operations that move pixels (the others keep them in place)

# each operation's strength, as ``name=value`` in a list of operations: (keyword, type, least value)
STRENGTHS = {
    "contrast": ("factor", float, 0.0),
    "sharpen": ("amount", float, 0.0),
    "erode": ("size", int, 1),
    "dilate": ("size", int, 1),
    "saturation": ("factor", float, 0.0),
    "color": ("factor", float, 0.0),
    "denoise": ("size", int, 1),
    "rotate": ("degrees", float, None),
    "translate": ("dx", float, None),
    "scale": ("factor", float, 0.01),
}


def _op(text: str) -> tuple[str, dict]:
    """``"rotate=-5"`` -> ("rotate", {"degrees": -5.0}); ``"sharpen"`` -> ("sharpen", {}) (its default)."""
    name, eq, value = (t.strip() for t in text.partition("="))
    if name not in OPS:
        raise VaekitError(f"unknown operation {name!r}; known: {', '.join(sorted(OPS))}")
    if not eq:
        return name, {}
    key, kind, least = STRENGTHS[name]
    need = "a whole number" if kind is int else "a number"
    try:
        v = kind(value)
    except ValueError:
        raise VaekitError(f"{text}: the {name} {key} must be {need}") from None
    if not np.isfinite(v) or (least is not None and v < least):
        floor = "" if least is None else f" of at least {least}"
        raise VaekitError(f"{text}: the {name} {key} must be {need}{floor}")
    return name, {key: v}


def parse_ops(spec: str) -> list[str]:
    """The operations of a comma list such as ``"contrast=1.5,sharpen,rotate=-5"``, each checked."""
    ops = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not ops:
        raise VaekitError("--ops needs at least one operation, e.g. contrast,sharpen")
    for op in ops:
        _op(op)
    return ops


def apply_ops(img, ops: str | list[str]) -> np.ndarray:
    """Apply operations in order, each at its default strength or at ``name=value`` (``STRENGTHS`` says which
    parameter the value sets): ``apply_ops(img, "contrast=1.5,sharpen")``."""
    a = _check(img)
    for op in parse_ops(ops) if isinstance(ops, str) else parse_ops(",".join(ops)):
        name, kw = _op(op)
        a = OPS[name](a, **kw)
    return a


def enhance_paths(src, dst, ops: str, *, shard=None, overwrite=False, progress=False):
    """``vaekit enhance``: one image or a folder (mirrored names, PNG out, 16-bit where the input had more than 8
    bits) through :func:`vaekit.batch.run_images`, the operations checked before any input is read."""
    from . import batch
    from .io import source_format, write_image

    names = parse_ops(ops)
    moves = [n for n in names if _op(n)[0] in GEOMETRIC]  # the transparency moves with the pixels

    def work(it, data):
        img, alpha = data
        if alpha is not None and moves:
            alpha = apply_ops(alpha, moves)  # outside the moved image: transparent (fill 0)
        write_image(it.output, apply_ops(img, names), *source_format(it.input).written, alpha=alpha)
        return [it.output], {"ops": names}

    opts = {"settings": batch.settings_of(ops=names), "shard": shard, "overwrite": overwrite, "progress": progress}
    return batch.run_images(src, dst, work, alpha=True, **opts)
