"""The one task contract, and what every task shares.

* Images are numpy arrays, H x W or H x W x C, uint8, uint16 or float in [0, 1] units; a result comes back in
  the dtype and shape that went in (:func:`vaekit.io.as_float_image` / :func:`vaekit.io.restore_layout`), an
  alpha channel (gray or RGB with alpha) handed back unchanged.
* ``model=`` is a shipped name, a run folder or ``.safetensors`` path, or a loaded module (:func:`resolve_model`).
* ``samples`` is the number of posterior draws; 1 means one pass (:func:`check_samples`).
* ``details=True`` returns a :class:`Result`; ``seed=`` and ``device=`` mean the same in every task.
* Overlapping tiles are blended with :func:`ramp` weights at :func:`tile_starts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import VaekitError
from ..models.layers import ENSEMBLES


@dataclass
class Result:
    """What every task returns with ``details=True``.

    ``image``: the estimate (the mean of the draws) in the input's dtype and shape; ``samples``: the individual
    draws, same layout (empty for one pass); ``std``: per-pixel standard deviation in [0, 1] units (float32), or
    None where the method has none; ``info``: what the task found or used (noise level, parameters, method,
    seconds, ...), also readable as attributes (``r.sigma``)."""

    image: np.ndarray | None
    samples: list = field(default_factory=list)
    std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __getattr__(self, name):
        info = self.__dict__.get("info", {})
        if name in info:
            return info[name]
        raise AttributeError(f"Result has no field or info entry {name!r}")


def check_samples(samples) -> int:
    """``samples`` as an int >= 1 (the number of draws; 1 is one pass)."""
    try:
        n = int(samples)
    except (TypeError, ValueError):
        raise VaekitError(f"samples must be a whole number, not {samples!r}") from None
    if n < 1 or n != samples:
        raise VaekitError(f"samples must be 1 (one pass) or more draws, not {samples}")
    return n


def check_ensemble(n) -> int:
    """A self-ensemble size (``vaekit.models.layers.ENSEMBLES``) as an int, or one clear error."""
    if n not in ENSEMBLES:
        raise VaekitError(f"ensemble must be one of {', '.join(map(str, ENSEMBLES))}, not {n}")
    return int(n)


def ensemble_transforms(n: int) -> tuple:
    """The transforms (``vaekit.models.layers.dihedral`` indices) a self-ensemble of ``n`` passes averages: 1
    none, 2 a half turn (on validation images it beat a mirror, docs/decisions.md), 4 the quarter turns, 8 all;
    each size holds the smaller ones."""
    return {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3), 8: tuple(range(8))}[n]


def resolve_device(device=None) -> torch.device:
    """``None``/"cpu", "cuda", "auto" or a torch.device."""
    from ..training.loop import resolve_device as _resolve

    if isinstance(device, torch.device):
        return device
    return _resolve(device or "cpu")


def resolve_model(model, default: str | None = None, *, device=None) -> torch.nn.Module:
    """A loaded module as it is, or a shipped name / run folder / weights path loaded (``default`` when None),
    in eval mode on ``device`` (a shipped one is loaded once per process, :func:`vaekit.pretrained.shared_model`)."""
    from ..pretrained import shared_model

    if isinstance(model, torch.nn.Module):
        m = model
    else:
        if model is None and default is None:
            raise VaekitError("no model given")
        m = shared_model(model if model is not None else default)
    return m.eval().to(resolve_device(device))


def check_image_vae(model, task: str) -> None:
    """Refuse, in one sentence, a model that is no VAE of whole images (a denoiser, the codec, the exposure
    posterior): ``task`` (generate, interpolate, augment, eval) needs its prior and its posterior of an image."""
    from ..models.base import VAEBase

    if not isinstance(model, VAEBase):
        raise VaekitError(
            f"{task} needs a VAE of whole images, such as mnist-vae or cvae-mnist; this model "
            f"({getattr(model, 'arch', type(model).__name__)}) is not one"
        )


def model_batch(model, images, task: str) -> torch.Tensor:
    """``images`` as the float (B, C, H, W) batch in [0, 1] that an image VAE takes (augment, eval), or one
    sentence on why not: a photo given as H x W x 3 raised deep inside the network."""
    check_image_vae(model, task)
    x = images.detach().float() if torch.is_tensor(images) else torch.as_tensor(np.asarray(images), dtype=torch.float32)
    shape = getattr(model, "image_shape", None)
    shape = tuple(shape) if shape is not None else None
    want = "(B, " + (", ".join(map(str, shape)) if shape is not None else "C, H, W") + ")"
    if x.ndim != 4 or (shape is not None and tuple(x.shape[1:]) != shape):
        raise VaekitError(
            f"{task} takes a batch {want} in [0, 1], not an array of shape {tuple(x.shape)}; "
            "the CLI reads files and resizes them to the model's input"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise VaekitError(f"{task} takes values in [0, 1] (divide 0..255 images by 255)")
    return x


def ramp(n: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """Blending weights of one tile side: linear over ``overlap`` pixels where a neighbour tile overlaps."""
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not first:
            w[:overlap] = r
        if not last:
            w[-overlap:] = r[::-1]
    return w


def tile_starts(n: int, tile: int, step: int) -> list[int]:
    """Tile offsets covering ``n`` pixels with tiles of ``tile`` every ``step`` (the last flush with the end)."""
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, step))
    return s + [n - tile]


def even_tiles(n: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(size, offsets): the fewest tiles of at most ``tile`` pixels that cover ``n`` with ``overlap`` between
    neighbours, all of one size (rounded up to ``multiple``) -- 800 px in two tiles of 416, not two of 768."""
    if n <= tile:
        return n, [0]
    k = math.ceil((n - overlap) / (tile - overlap))
    size = min(tile, -(-math.ceil((n + (k - 1) * overlap) / k) // multiple) * multiple)
    return size, tile_starts(n, size, size - overlap)
