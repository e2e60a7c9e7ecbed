"""Classical augmentation: ``method(image, rng) -> a random variant`` (float in [0, 1] units, same shape)."""

from __future__ import annotations

from ..enhance import random_affine

METHODS = {"affine": random_affine}
