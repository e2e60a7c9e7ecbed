"""Weights: shipped ones by name, local ones by run folder.

A model on disk is two files side by side: ``<stem>.safetensors`` (tensors,
never pickle) and a JSON model card (architecture + arguments, data,
training command, hardware, wall time, metrics, sha256 of the tensors file).
Loading rebuilds the architecture from the card -- it never guesses shapes --
and refuses a tensors file whose sha256 differs from the card's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import VaekitError
from .io import atomic_write_text
from .registry import create_model

WEIGHTS_DIR = Path(__file__).parent / "weights"
# name -> file stem in WEIGHTS_DIR.  Names are stable public identifiers.
SHIPPED = {
    "mnist-vae": "mnist-vae",
    "codec-hyperprior": "codec-hyperprior",
    "codec-hyperprior-r1": "codec-hyperprior-r1",
    "codec-hyperprior-r2": "codec-hyperprior-r2",
    "codec-hyperprior-r3": "codec-hyperprior-r3",
    "codec-hyperprior-r4": "codec-hyperprior-r4",
    "codec-hyperprior-r5": "codec-hyperprior-r5",
    "codec-hyperprior-r6": "codec-hyperprior-r6",
    "codec-hyperprior-r7": "codec-hyperprior-r7",
    "compensate-posterior": "compensate-posterior",
    "cvae-mnist": "cvae-mnist",
    "denoise-gray": "denoise-gray",
    "denoise-color": "denoise-color",
    "inpaint-color": "inpaint-color",
}


# Weights that are not in the package but keep old files decoding: their cards ship (sha256 included), the
# tensors are a download, installed once with ``vaekit models --install FILE`` (offline) or ``download(name)``.
DOWNLOADS = {
    "codec-hyperprior-r1": "https://github.com/vaekit/vaekit-weights/releases/download/r1/"
    "codec-hyperprior-r1.safetensors",
    "codec-hyperprior-r2": "https://github.com/vaekit/vaekit-weights/releases/download/r2/"
    "codec-hyperprior-r2.safetensors",
    "codec-hyperprior-r3": "https://github.com/vaekit/vaekit-weights/releases/download/r3/"
    "codec-hyperprior-r3.safetensors",
    "codec-hyperprior-r4": "https://github.com/vaekit/vaekit-weights/releases/download/r4/"
    "codec-hyperprior-r4.safetensors",
    "codec-hyperprior-r5": "https://github.com/vaekit/vaekit-weights/releases/download/r5/"
    "codec-hyperprior-r5.safetensors",
    "codec-hyperprior-r6": "https://github.com/vaekit/vaekit-weights/releases/download/r6/"
    "codec-hyperprior-r6.safetensors",
    "codec-hyperprior-r7": "https://github.com/vaekit/vaekit-weights/releases/download/r7/"
    "codec-hyperprior-r7.safetensors",
}


def models_dir() -> Path:
    return Path(os.environ.get("VAEKIT_MODELS_DIR", Path.home() / ".cache" / "vaekit" / "models"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SCALE_SUFFIX = ":int8-scale"  # beside an int8 tensor: its fp16 scales, one per kernel (or row)


# Only large weights are stored as int8: the small ones are the full-resolution first and last layers, where 8 bits
# cost most (with one scale per row, 0.33 dB for the colour denoiser's output layer alone), and few of the bytes.
INT8_MIN_SIZE = 65536


def int8_keys(model: torch.nn.Module) -> set[str]:
    """The state-dict keys stored as int8: the weights of large convolutions and linear layers."""
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    return {
        f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, kinds) and m.weight.numel() >= INT8_MIN_SIZE
    }


def _groups(shape) -> int:
    """Values that share one scale: a convolution kernel (the dimensions after the first two), or a row."""
    return math.prod(shape[2:]) if len(shape) > 2 else math.prod(shape[1:])


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per kernel of ``w`` (per row for a matrix) with fp16 scales: ``w ~= q * scale``, the error at
    most half a step, 1/254 of the kernel's largest magnitude."""
    flat = w.detach().float().reshape(-1, _groups(w.shape))
    scale = (flat.abs().amax(1) / 127).clamp_min(2.0**-24).half()
    q = torch.round(flat / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape).contiguous(), scale.contiguous()


def _dequantize(state: dict) -> dict:
    """Widen int8 kernels back to float32: each value is one product of an 8-bit integer and an fp16 scale (11
    significant bits), which float32's 24 bits hold exactly, so every machine gets the same weights."""
    for k in [k for k in state if k.endswith(SCALE_SUFFIX)]:
        scale, base = state.pop(k), k[: -len(SCALE_SUFFIX)]
        q = state.get(base)
        if q is None or q.dtype != torch.int8 or scale.numel() * _groups(q.shape) != q.numel():
            raise VaekitError(f"the int8 tensor {base!r} and its scales do not match")
        state[base] = (q.float().reshape(scale.numel(), -1) * scale.float()[:, None]).reshape(q.shape)
    return state


def read_weights(path: str | Path) -> dict:
    """The tensors of a weights file, int8 kernels widened back to float32 (:func:`_dequantize`): what a model
    or a training run's ``init_from`` loads."""
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise VaekitError(f"cannot read weights {path}: {e}") from None
    return _dequantize(state)


def save_model(
    model: torch.nn.Module, directory: str | Path, card: dict, *, stem: str = "model", dtype: torch.dtype | None = None
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` (the card) as a pair that always loads together.

    Both are written in full under ``.new`` names, then the weights and then the card are renamed into place.
    A kill between the two renames leaves new weights beside the old card and the new card as ``<stem>.json.new``:
    :func:`load_from_files` sees the sha256 of the weights in that card and finishes the rename.
    ``dtype=torch.float16`` stores floating tensors in half precision; ``torch.int8`` (what :func:`ship` writes) stores
    large convolution and linear weights as int8 with an fp16 scale per kernel (:func:`quantize_int8`) and the
    other floating tensors in half precision. Both are widened back to float32 at load, the same
    numbers on every machine.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    as_int8 = int8_keys(model) if dtype == torch.int8 else set()
    floats = torch.float16 if dtype == torch.int8 else dtype  # every other floating tensor
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if k in as_int8:
            tensors[k], tensors[k + SCALE_SUFFIX] = quantize_int8(v)
            continue
        if floats is not None and v.is_floating_point():
            v = v.to(floats)
        tensors[k] = v.contiguous()
    if hasattr(model, "coding_tables"):  # codecs: the integer tables every decoder must share
        tensors.update({k: v.contiguous() for k, v in model.coding_tables().items()})
    wpath, cpath = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    tmp = wpath.with_name(wpath.name + ".new")
    save_file(tensors, str(tmp), metadata={"arch": model.arch, "arch_args": json.dumps(model.arch_args)})
    os.chmod(tmp, 0o644)
    card = dict(
        card,
        arch=model.arch,
        arch_args=model.arch_args,
        weights_file=wpath.name,
        sha256=_sha256(tmp),
        parameters=sum(p.numel() for p in model.parameters()),
        weights_dtype=str(dtype or torch.float32).replace("torch.", ""),
    )
    ctmp = cpath.with_name(cpath.name + ".new")
    ctmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, wpath)
    os.replace(ctmp, cpath)
    return wpath


def read_card(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VaekitError(f"cannot read model card {path}: {e}") from None


def load_from_files(weights: str | Path, card_path: str | Path, verify: bool = True) -> torch.nn.Module:
    weights = Path(weights)
    card = read_card(card_path)
    if not weights.is_file():
        raise VaekitError(f"weights file {weights} is missing")
    if verify and card.get("sha256") and _sha256(weights) != card["sha256"]:
        pending = Path(card_path).with_name(Path(card_path).name + ".new")  # save_model stopped between renames
        fresh = read_card(pending) if pending.is_file() else {}
        if fresh.get("sha256") == _sha256(weights):
            os.replace(pending, card_path)
            return load_from_files(weights, card_path, verify)
        raise VaekitError(f"sha256 of {weights} does not match its model card: the file is corrupted or was changed")
    model = create_model(card["arch"], **card.get("arch_args", {}))
    state = read_weights(weights)
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise VaekitError(
            f"weights {weights} do not fit architecture {card['arch']}: {str(e).splitlines()[0]}"
        ) from None
    model.card = card
    model.eval()
    return model


def installed_weights(name: str) -> Path:
    """Where the tensors of shipped model ``name`` are: in the package, or (downloads) under the models folder."""
    packaged = (WEIGHTS_DIR / SHIPPED[name]).with_suffix(".safetensors")
    if packaged.is_file() or name not in DOWNLOADS:
        return packaged
    return models_dir() / "weights" / packaged.name


def install_weights(name: str, source: str | Path) -> Path:
    """Install the downloaded tensors of ``name`` from the file ``source`` after checking its sha256 against the
    shipped card (no network)."""
    if name not in DOWNLOADS:
        raise VaekitError(f"{name!r} is not a downloadable model; downloadable: {', '.join(sorted(DOWNLOADS))}")
    source = Path(source)
    if not source.is_file():
        raise VaekitError(f"{source} is not a file")
    want = read_card((WEIGHTS_DIR / SHIPPED[name]).with_suffix(".json"))["sha256"]
    got = _sha256(source)
    if got != want:
        raise VaekitError(f"{source} is not the {name} weights (sha256 {got[:16]}..., expected {want[:16]}...)")
    dest = installed_weights(name)
    if dest.exists() and dest.resolve() == source.resolve():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, source.read_bytes())
    return dest


def download(name: str) -> Path:
    """Fetch and install the tensors of a downloadable model (needs the network; checked by sha256)."""
    import tempfile
    import urllib.request

    if name not in DOWNLOADS:
        raise VaekitError(f"{name!r} is not a downloadable model; downloadable: {', '.join(sorted(DOWNLOADS))}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.safetensors"
        try:
            urllib.request.urlretrieve(DOWNLOADS[name], path)
        except OSError as e:
            raise VaekitError(f"could not download {DOWNLOADS[name]}: {e}") from None
        return install_weights(name, path)


def required_weights(name: str) -> Path:
    """The tensors of shipped model ``name``; where they are a download not yet installed, one sentence that names
    it and the command that installs it."""
    weights = installed_weights(name)
    if not weights.is_file():
        raise VaekitError(
            f"the weights of {name} are not installed (a separate download: {DOWNLOADS[name]}); "
            f"install the file with: vaekit models --install {name}=FILE"
        )
    return weights


def load_pretrained(name: str) -> torch.nn.Module:
    """A shipped model by name (e.g. ``"mnist-vae"``), ready for inference."""
    if name not in SHIPPED:
        raise VaekitError(f"unknown pretrained model {name!r}; shipped: {', '.join(sorted(SHIPPED))}")
    return load_from_files(required_weights(name), (WEIGHTS_DIR / SHIPPED[name]).with_suffix(".json"))


def shared_model(spec: str | Path, models_root: str | Path | None = None) -> torch.nn.Module:
    """:func:`load_model`, but a shipped model is loaded once per process and the same module handed back after
    (keyed by its weights file's path, size and mtime, so an install loads anew): an API loop over many images then
    pays the 60-90 ms load once.  Callers must not change its weights; run folders and paths load afresh each
    time (a run may still be training)."""
    name = str(spec)
    if name not in SHIPPED:
        return load_model(spec, models_root)
    weights = installed_weights(name)
    if not weights.is_file():
        return load_pretrained(name)  # its clear error
    stat = weights.stat()
    return _shared(name, str(weights), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _shared(name: str, weights: str, size: int, mtime_ns: int) -> torch.nn.Module:
    return load_pretrained(name)


def load_checkpoint(path: str | Path) -> torch.nn.Module:
    """The model of a training checkpoint (a run that has not finished: no model.safetensors yet): its weight
    average where the run keeps one (``ema``), the weights that it validates and will save, else its weights."""
    path = Path(path)
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
        cfg = ck["config"]
        model = create_model(cfg["model"], **(cfg.get("model_args") or {}))
        averaged = {k[len("module.") :]: v for k, v in (ck.get("ema") or {}).items() if k.startswith("module.")}
        model.load_state_dict(averaged or ck["model"])
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
        raise VaekitError(f"cannot load the checkpoint {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    model.card = {
        "name": path.parent.name,
        "arch": cfg["model"],
        "arch_args": cfg.get("model_args") or {},
        "checkpoint_step": int(ck["step"]),
        "sha256": None,
    }
    return model.eval()


def load_model(spec: str | Path, models_root: str | Path | None = None) -> torch.nn.Module:
    """Resolve ``spec``: a shipped name, a run folder / ``.safetensors`` path,
    or a name under the local models folder (``--models-dir``)."""
    spec_s = str(spec)
    if spec_s in SHIPPED:
        return load_pretrained(spec_s)
    p = Path(spec_s)
    if p.suffix == ".safetensors" and p.is_file():
        return load_from_files(p, p.with_suffix(".json"))
    if p.is_dir() and (p / "model.safetensors").is_file():
        return load_from_files(p / "model.safetensors", p / "model.json")
    if p.is_dir() and (p / "checkpoint.pt").is_file():  # a run still training: its latest checkpoint
        return load_checkpoint(p / "checkpoint.pt")
    local = Path(models_root) if models_root else models_dir()
    if (local / spec_s / "model.safetensors").is_file():
        return load_from_files(local / spec_s / "model.safetensors", local / spec_s / "model.json")
    raise VaekitError(
        f"unknown model {spec_s!r}: not a shipped model ({', '.join(sorted(SHIPPED))}), "
        f"not a run folder with model.safetensors, and not found under {local}"
    )


def available_models(models_root: str | Path | None = None) -> list[dict]:
    """Shipped and local models with their cards (for ``vaekit models``)."""
    rows = []
    for name, stem in sorted(SHIPPED.items()):
        cpath = (WEIGHTS_DIR / stem).with_suffix(".json")
        if cpath.is_file():
            source = "shipped" if installed_weights(name).is_file() else "download, not installed"
            rows.append({"name": name, "source": source, "card": read_card(cpath)})
    local = Path(models_root) if models_root else models_dir()
    if local.is_dir():
        for card in sorted(local.glob("*/model.json")):
            rows.append({"name": card.parent.name, "source": str(card.parent), "card": read_card(card)})
    return rows


def ship(
    run_dir: str | Path, name: str, arch_args: dict | None = None, dtype: torch.dtype = torch.int8, **card_updates
) -> Path:
    """Copy a run's best weights into the package as ``name``, large weights in int8 (maintainers); ``dtype``
    ``torch.float16`` keeps every tensor in half precision (a model grown from an fp16 release, whose tensors are
    then stored exactly as before).

    ``arch_args`` overrides architecture arguments that change no tensor (inference settings chosen on
    validation data after training, e.g. an inpainter's ``prefill``); the weights must load unchanged.
    ``card_updates`` are merged into the card one level deep (e.g.
    ``data={"licence": ...}``)."""
    run_dir = Path(run_dir)
    model = load_from_files(run_dir / "model.safetensors", run_dir / "model.json")
    if arch_args:
        rebuilt = create_model(model.arch, **{**model.arch_args, **arch_args})
        rebuilt.load_state_dict(model.state_dict())  # strict: an override that changes a tensor fails here
        rebuilt.card = model.card
        model = rebuilt
    card = dict(model.card, name=name)
    for k in ("weights_file", "sha256", "parameters", "weights_dtype"):
        card.pop(k, None)
    update_card(card, card_updates)
    return save_model(model, WEIGHTS_DIR, card, stem=SHIPPED.get(name, name), dtype=dtype)


def update_card(card: dict, updates: dict) -> dict:
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(card.get(k), dict):
            card[k] = {**card[k], **v}
        else:
            card[k] = v
    return card


def update_shipped_card(name: str, **updates) -> Path:
    """Merge ``updates`` into a shipped model's card (the weights and their sha256 stay)."""
    path = (WEIGHTS_DIR / SHIPPED[name]).with_suffix(".json")
    card = update_card(read_card(path), updates)
    return atomic_write_text(path, json.dumps(card, indent=2) + "\n")
