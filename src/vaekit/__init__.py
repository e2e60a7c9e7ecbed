"""vaekit: variational autoencoders for real image work.

The functions here mirror the CLI::

    import vaekit
    model = vaekit.load_pretrained("mnist-vae")
    grid = vaekit.generate(model, n=64, temperature=1.0, seed=0)   # (64, 1, 28, 28) in [0, 1]
    data = vaekit.compress(image, quality=4)                       # .vkc bytes (shipped codec)
    image2 = vaekit.decompress(data)                                # uint8 H x W x 3
    variants = vaekit.augment(digits, n=10, strength=0.5)           # (B, 10, 1, 28, 28)
    fixed = vaekit.compensate(dark_photo)                           # exposure, gamma, colour cast
    clean = vaekit.denoise(noisy, sigma=25)                         # None: the level is estimated
    repaired = vaekit.inpaint(photo, mask)                          # mask True = missing; known pixels kept
    fills = vaekit.inpaint(photo, mask, samples=8, details=True)    # .image (mean), .samples, .std
"""

__version__ = "0.1.0"

from importlib import import_module

from .errors import VaekitError

# name -> the module that defines it; loaded on first use, so that ``vaekit --help`` does not wait for torch
_LAZY = {
    "degrade": None,  # modules: degrade.gaussian(...), enhance.apply_ops(img, "contrast,sharpen"), ...
    "enhance": None,
    "read_image": ".io",
    "write_image": ".io",
    "load_model": ".pretrained",
    "load_pretrained": ".pretrained",
    "create_model": ".registry",
    "list_models": ".registry",
    "augment": ".tasks.augment",
    "compensate": ".tasks.compensate",
    "compress": ".tasks.compress",
    "decompress": ".tasks.compress",
    "denoise": ".tasks.denoise",
    "evaluate": ".tasks.generate",
    "generate": ".tasks.generate",
    "interpolate": ".tasks.generate",
    "detect_scratches": ".tasks.inpaint",
    "inpaint": ".tasks.inpaint",
}


def __getattr__(name):
    if name not in _LAZY:  # a submodule (vaekit.io, vaekit.tasks, ...), as an eager package would have bound it
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'vaekit' has no attribute {name!r}") from None
    module = import_module(_LAZY[name] or f".{name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})


def train(config, output, *, overrides=(), resume=False, quiet=False):
    """Train from a YAML config path (or a :class:`TrainConfig`) into ``output``."""
    from .training.config import TrainConfig
    from .training.loop import train as _train

    cfg = config if isinstance(config, TrainConfig) or config is None else TrainConfig.load(config, list(overrides))
    return _train(cfg, output, resume=resume, quiet=quiet)


__all__ = [
    "__version__",
    "VaekitError",
    "create_model",
    "list_models",
    "load_pretrained",
    "load_model",
    "generate",
    "interpolate",
    "evaluate",
    "train",
    "compress",
    "decompress",
    "read_image",
    "write_image",
    "augment",
    "enhance",
    "compensate",
    "denoise",
    "inpaint",
    "detect_scratches",
    "degrade",
]
