"""Training configuration: one dataclass, loaded from YAML with ``key=value``
overrides, saved inside every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import VaekitError


@dataclass
class TrainConfig:
    # what to train
    model: str = "hvae"
    model_args: dict = field(default_factory=dict)
    # data
    data: str = "mnist"  # mnist | cifar10 | folder
    data_dir: str | None = None
    binarize: bool = False  # dynamic binarization (MNIST likelihood work)
    val_size: int = 10000  # the last val_size training items are held out for validation
    patch_size: int = 64  # folder data: random crops of this size
    patches_per_image: int = 16
    image_mode: str = "RGB"  # folder data: "L" or "RGB"
    split_file: str | None = None  # folder data: TSV (file, split) under data_dir; rows "val" validate, others train
    val_patches_per_image: int = 0  # folder data: crops per validation image; 0: patches_per_image
    downscale: int = 1  # folder data: area-downscale 8-bit sources by this integer factor (JPEG blocking averages out)
    blocky_downscale: int = 1  # folder data: the factor, when larger, for sources showing JPEG's block grid
    # optimisation
    batch_size: int = 128  # global batch (split across DDP processes)
    epochs: int = 10
    max_steps: int = 0  # 0: run `epochs` epochs
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0  # linear LR warm-up
    kl_warmup_steps: int = 0  # KL weight ramps 0 -> 1 over these steps
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    # exponential moving average of the weights, updated every step with this decay (e.g. 0.999; lower over the
    # first updates); validation, the best weights and the card are the average's: it smooths small-batch noise
    # out of the weights.  0: off
    ema: float = 0.0
    seed: int = 0
    # bookkeeping
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    eval_every: int = 0  # steps between validations; 0: once per epoch
    tensorboard: bool = False
    device: str = "auto"  # cpu | cuda | auto
    threads: int = 0  # torch intra-op threads; 0: leave torch's default
    amp: str = "none"  # "bf16": forward and loss under bfloat16 autocast (GPUs; the weights stay float32)
    time_budget_s: float = 0.0  # stop after this much training time in this process (checkpoint, best weights)
    init_from: str | None = (
        None  # fine-tune: start from a shipped model's name or a .safetensors file (tensors of matching shape)
    )
    init_exclude: list = field(default_factory=list)  # tensor-name prefixes that init_from leaves at their fresh values
    trainable: list = field(default_factory=list)  # parameter-name prefixes that train (the rest frozen); empty: all

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise VaekitError(f"unknown key {unknown[0]!r} in {source}; known keys: {', '.join(cls.fields())}")
        cfg = cls(**{k: _coerce(k, v, cls.fields()[k].type, source) for k, v in d.items()})
        cfg.validate(source)
        return cfg

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> "TrainConfig":
        d: dict = {}
        recipe = shipped_recipe(str(path)) if path is not None and not Path(path).is_file() else None
        if recipe is not None:
            d = recipe
        elif path is not None:
            path = Path(path)
            if not path.is_file():
                raise VaekitError(f"config file {path} does not exist (or name a shipped model to fine-tune it)")
            try:
                d = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as e:
                raise VaekitError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
            if not isinstance(d, dict):
                raise VaekitError(f"{path} must hold a mapping of config keys")
        for item in overrides:
            apply_override(d, item)
        return cls.from_dict(d, source=str(path) if path else "overrides")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, source="config"):
        def bad(msg):
            raise VaekitError(f"{source}: {msg}")

        if self.data not in ("mnist", "cifar10", "folder"):
            bad(f"data must be mnist, cifar10 or folder, not {self.data!r}")
        if self.schedule not in ("cosine", "constant"):
            bad(f"schedule must be cosine or constant, not {self.schedule!r}")
        if self.batch_size < 1 or self.epochs < 0 or self.max_steps < 0 or self.lr <= 0:
            bad("batch_size, epochs, max_steps and lr must be positive")
        if self.device not in ("cpu", "cuda", "auto"):
            bad(f"device must be cpu, cuda or auto, not {self.device!r}")
        if self.amp not in ("none", "bf16"):
            bad(f"amp must be none or bf16, not {self.amp!r}")
        if self.time_budget_s < 0:
            bad("time_budget_s must be 0 (none) or positive")
        if not 0.0 <= self.ema < 1.0:
            bad(f"ema must be 0 (off) or a decay in (0, 1), not {self.ema}")
        if self.downscale < 1 or self.blocky_downscale < 1:
            bad(f"downscale and blocky_downscale must be 1 or more, not {self.downscale} and {self.blocky_downscale}")
        if not isinstance(self.model_args, dict):
            bad("model_args must be a mapping")


def _coerce(key, value, typ: str, source):
    """YAML reads ``3e-4`` as a string and ``5`` as an int; bring values to the field's type."""
    try:
        if typ == "float" and not isinstance(value, bool):
            return float(value)
        if typ == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
        if typ == "bool" and isinstance(value, bool):
            return value
        if typ in ("str", "str | None") and (value is None and typ.endswith("None") or isinstance(value, str)):
            return value if value is None else str(value)
        if typ == "dict" and isinstance(value, dict):
            return value
        if typ == "list" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    except (TypeError, ValueError):
        pass
    raise VaekitError(f"{source}: {key} must be of type {typ}, got {value!r}")


def apply_override(d: dict, item: str) -> None:
    """Apply one ``key=value`` (value parsed as YAML; ``a.b=v`` sets nested keys)."""
    if "=" not in item:
        raise VaekitError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        parsed = value
    parts = key.strip().split(".")
    if parts[0] not in TrainConfig.fields():
        raise VaekitError(f"unknown config key {parts[0]!r} in override {item!r}")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise VaekitError(f"override {item!r}: {p!r} is not a mapping")
    node[parts[-1]] = parsed


def shipped_recipe(name: str) -> dict | None:
    """The training config a shipped model's card records, set to fine-tune that model on other data: from the
    shipped weights (``init_from=NAME``), on the folder ``--data-dir`` gives, holding out its last tenth for
    validation (no split file).  None if ``name`` is no shipped model."""
    from ..pretrained import SHIPPED, WEIGHTS_DIR, read_card

    if name not in SHIPPED:
        return None
    recipe = read_card(WEIGHTS_DIR / f"{SHIPPED[name]}.json").get("training", {}).get("config")
    if not recipe:
        raise VaekitError(f"the card of {name} records no training config to fine-tune it with")
    return {**recipe, "init_from": name, "init_exclude": [], "data_dir": None, "split_file": None}
