"""One table from model name to builder: ``create_model`` and ``list_models``.

Every name here gets the same generated tests (tests/models/test_registry.py): shapes,
finite loss, backward, and a save/load round trip.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .errors import VaekitError

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {}


def register(name: str, doc: str):
    def wrap(builder):
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = (builder, doc)
        return builder

    return wrap


def list_models() -> dict[str, str]:
    """Registered architecture names with a one-line description each."""
    _load_families()
    return {name: doc for name, (_, doc) in sorted(_REGISTRY.items())}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build architecture ``name`` with keyword arguments ``kwargs``.

    The model remembers both (``model.arch``, ``model.arch_args``) so that
    checkpoints and weights can rebuild it without guessing shapes.
    """
    _load_families()
    if name not in _REGISTRY:
        raise VaekitError(f"unknown model architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    builder, _ = _REGISTRY[name]
    try:
        model = builder(**kwargs)
    except TypeError as e:
        raise VaekitError(f"bad arguments for model {name!r}: {e}") from None
    model.arch = name
    model.arch_args = dict(kwargs)
    return model


def _load_families():
    from . import models  # noqa: F401  (importing registers the families)
