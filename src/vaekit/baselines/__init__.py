"""The classical methods vaekit measures itself against, one registry for all tasks.

``BASELINES[task][name]`` is a function with the task's own signature:

* ``denoise``: ``f(noisy, sigma) -> estimate`` (float [0, 1] units; ``sigma`` on the 0–255 scale);
* ``inpaint``: ``f(image, mask) -> filled`` (mask True where missing; known pixels unchanged);
* ``compress``: a :class:`~vaekit.baselines.compress.Codec` (encode, decode, qualities of a sweep);
* ``compensate``: ``f(image) -> corrected``;
* ``augment``: ``f(image, rng) -> variant``.

The CLI's ``--method``, the benchmarks and the demo read this table, so a new classical method is one entry in
its task's module.
"""

from __future__ import annotations

from ..errors import VaekitError
from . import augment, compensate, compress, denoise, inpaint

BASELINES = {
    "denoise": denoise.METHODS,
    "inpaint": inpaint.METHODS,
    "compress": compress.CODECS,
    "compensate": compensate.METHODS,
    "augment": augment.METHODS,
}


def get(task: str, name: str, learned: tuple[str, ...] = ()):
    """The classical method ``name`` of ``task``; a clear error names the known ones, the task's ``learned``
    methods (``vae``) first."""
    table = BASELINES.get(task)
    if table is None:
        raise VaekitError(f"no classical methods for task {task!r}; tasks: {', '.join(BASELINES)}")
    if name not in table:
        noun = {"denoise": "denoising", "inpaint": "inpainting", "compress": "codec"}.get(task, task)
        raise VaekitError(f"unknown {noun} method {name!r}; choose one of {', '.join([*learned, *table])}")
    return table[name]


def available(task: str) -> list[str]:
    """Names usable on this install (BM3D only with its optional extra)."""
    return denoise.available() if task == "denoise" else list(BASELINES[task])
