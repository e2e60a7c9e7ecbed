"""Benchmarks: ``vaekit bench <task>`` -> results/<task>-<set>.{json,md,png}.

``BENCHES[task](**options)`` runs one; each module's ``DEFAULTS`` lists its options.  Every JSON carries its
provenance (versions, git sha, CPU, threads, seeds, weights sha256) and per-image values, and the command that
reproduces it; docs/benchmarks.md is generated from these files (scripts/benchmarks_doc.py).
"""

from __future__ import annotations

import importlib

TASKS = ("generate", "compress", "denoise", "inpaint", "augment", "compensate", "throughput", "serve")


class _Benches(dict):
    """task -> run function, imported on first use (a benchmark pulls in its task's models and baselines)."""

    def __missing__(self, task):
        if task not in TASKS:
            raise KeyError(task)
        fn = importlib.import_module(f"{__name__}.{task}").run
        self[task] = fn
        return fn

    def __contains__(self, task):
        return task in TASKS

    def __iter__(self):
        return iter(TASKS)

    def __len__(self):
        return len(TASKS)


BENCHES = _Benches()


def defaults(task: str) -> dict:
    """The options of benchmark ``task`` and their defaults."""
    return dict(importlib.import_module(f"{__name__}.{task}").DEFAULTS)
