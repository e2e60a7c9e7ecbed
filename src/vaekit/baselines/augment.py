"""Classical augmentation: ``method(image, rng) -> a random variant`` (float in [0, 1] units, same shape)."""

from __future__ import annotations


def affine(image, rng):
    """A random rotation, shift and scale (:func:`vaekit.enhance.random_affine` at its defaults)."""
    from ..enhance import random_affine  # on use: the CLI's parser reads this table and should not wait for scipy

    return random_affine(image, rng)


METHODS = {"affine": affine}
