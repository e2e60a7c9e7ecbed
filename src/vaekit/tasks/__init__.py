"""Tasks: what the CLI commands do, as plain functions under one contract (:mod:`vaekit.tasks.common`).

``TASKS`` names each task's API function as ``module.function``; :func:`get` returns it (the generated contract
test walks this table).  The functions are not imported here: their names are their modules' names.
"""

from __future__ import annotations

import importlib

TASKS = {
    "denoise": "denoise.denoise",
    "inpaint": "inpaint.inpaint",
    "compensate": "compensate.compensate",
    "augment": "augment.augment",
    "compress": "compress.compress",
    "decompress": "compress.decompress",
    "generate": "generate.generate",
    "interpolate": "generate.interpolate",
}


def get(name: str):
    """The API function of task ``name``."""
    module, fn = TASKS[name].split(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), fn)
