"""The training loop: one loop for CPU, GPU and torchrun DDP.

Resumable to the bit: the checkpoint holds model, optimizer, scheduler, step
and the torch RNG state; the data order is a pure function of (seed, epoch)
(DistributedSampler) and dynamic binarization draws from a generator seeded
by (seed, step, rank).  So a run killed and resumed from its last checkpoint
ends with the same weights as one that never stopped (same machine, seed).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DistributedSampler

from .. import __version__
from ..errors import VaekitError
from ..io import atomic_write_text
from ..registry import create_model
from . import dist as D
from .config import TrainConfig, apply_override

CKPT = "checkpoint.pt"


def resolve_device(kind: str) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda was asked for but no CUDA device is available")
    return torch.device(kind)


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_datasets(cfg: TrainConfig):
    """(train, val) datasets; validation is the tail of the training split."""
    from .. import data as vd

    if cfg.data_dir is None:
        raise VaekitError("no data directory: pass --data-dir (or set data_dir in the config)")
    if cfg.data in ("mnist", "cifar10"):
        if cfg.data == "mnist":
            x, y = vd.mnist_tensors(cfg.data_dir, "train")
        else:
            xn, yn = vd.load_cifar10(cfg.data_dir, "train")
            x, y = torch.from_numpy(xn).permute(0, 3, 1, 2).float().div(255.0), torch.from_numpy(yn)
        n_val = min(cfg.val_size, x.shape[0] // 5)
        cut = x.shape[0] - n_val
        return (
            vd.TensorImages(x[:cut], y[:cut], binarize=cfg.binarize),
            vd.TensorImages(x[cut:], y[cut:], binarize=cfg.binarize),
        )
    files = vd.find_images(cfg.data_dir)
    if len(files) < 2:
        raise VaekitError(f"need at least 2 images under {cfg.data_dir}, found {len(files)}")
    if cfg.split_file:
        split = Path(cfg.data_dir) / cfg.split_file
        if not split.is_file():  # the recipe names one; the user's own folder may have none
            raise VaekitError(
                f"split file {split} does not exist: give split_file=null to hold out the last tenth of the images "
                "for validation"
            )
        train_files, val_files = vd.split_by_file(files, split)
    else:
        n_val = max(1, min(len(files) // 10, cfg.val_size))
        train_files, val_files = files[:-n_val], files[-n_val:]
    val_ppi = cfg.val_patches_per_image or cfg.patches_per_image
    scale = {"downscale": cfg.downscale, "blocky_downscale": cfg.blocky_downscale}
    train = vd.RandomPatches(train_files, cfg.patch_size, cfg.patches_per_image, cfg.image_mode, cfg.seed, **scale)
    try:
        val = vd.RandomPatches(val_files, cfg.patch_size, val_ppi, cfg.image_mode, cfg.seed + 1, **scale)
    except VaekitError as e:
        held = "the split file's val rows" if cfg.split_file else "the last tenth of the images by name"
        raise VaekitError(f"validation ({held}: {len(val_files)}, the first {val_files[0]}): {e}") from None
    return train, val


def fetch(ds, idx, labels: bool = False):
    """One batch of images; with ``labels`` (class-conditional models) also their labels."""
    if hasattr(ds, "__getitems__"):
        items = ds.__getitems__(idx)
        if labels:
            if len(items) < 2:
                raise VaekitError("a class-conditional model needs labelled data (mnist or cifar10)")
            return items[0], items[1]
        return items[0]
    items = [ds[i] for i in idx]
    x = torch.stack([it[0] if isinstance(it, tuple) else it for it in items])
    if labels:
        if not all(isinstance(it, tuple) for it in items):
            raise VaekitError("a class-conditional model needs labelled data (mnist or cifar10)")
        return x, torch.as_tensor([int(it[1]) for it in items])
    return x


def _forward(model, net, ds, idx, device):
    """(x, model output) for the batch ``idx``; conditional models get the labels too."""
    if getattr(model, "conditional", False):
        x, y = fetch(ds, idx, labels=True)
        x = x.to(device, non_blocking=True)
        return x, net(x, y.to(device))
    x = fetch(ds, idx).to(device, non_blocking=True)
    return x, net(x)


def lr_lambda(cfg: TrainConfig, total_steps: int):
    def f(step):
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


@torch.no_grad()
def validate(model, ds, batch_size, device, seed) -> dict:
    """Mean ELBO (nats/example) with fixed binarization and latent noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if getattr(ds, "binarize", False):
            ds.set_generator(torch.Generator().manual_seed(seed))
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(0)
        model.eval()
        tot = {"elbo": 0.0, "rec": 0.0, "kl": 0.0}
        n = 0
        for i in range(0, len(ds), batch_size):
            x, out = _forward(model, model, ds, list(range(i, min(i + batch_size, len(ds)))), device)
            m = model.loss(x, out)
            for k in m:  # elbo, rec, kl and any extra figure a model reports (e.g. rec_prior)
                if k not in ("loss", "psnr"):
                    tot[k] = tot.get(k, 0.0) + float(m[k]) * x.shape[0]
            n += x.shape[0]
        model.train()
    return {k: v / n for k, v in tot.items()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()}, {torch.get_num_threads()} thread(s)"


def ema_update(decay: float):
    """The moving average's step for ``AveragedModel``: decay ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates (TensorFlow's ExponentialMovingAverage), so a short run's average is not held at its first weights."""

    @torch.no_grad()
    def update(averaged, current, n):
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, 1.0 - d)

    return update


def init_weights(model: torch.nn.Module, source: str, exclude=()) -> str:
    """Copy into ``model`` the tensors of ``source`` (a shipped model's name or a .safetensors file) whose name and
    shape match, except those whose name starts with one of ``exclude``; the others keep their fresh
    initialisation.  Returns a one-line account.  Fewer than half of the
    model's tensors matching is taken for a wrong source, and refused."""
    from ..pretrained import SHIPPED, read_weights, required_weights

    path = required_weights(source) if source in SHIPPED else Path(source)
    if not path.is_file():
        raise VaekitError(
            f"init_from: {source!r} is neither a shipped model ({', '.join(sorted(SHIPPED))}) nor a weights file"
        )
    try:
        state = read_weights(path)
    except VaekitError as e:
        raise VaekitError(f"init_from: {e}") from None
    grown = getattr(model, "grown_state", None)  # a model that can start from a narrower one of its family
    if grown is not None:
        state = grown(state)
    ref = model.state_dict()
    fit = {}
    for k, v in state.items():
        if k in ref and ref[k].shape == v.shape and not k.startswith(tuple(exclude)):
            fit[k] = v.to(ref[k].dtype)
    if 2 * len(fit) < len(ref):
        raise VaekitError(
            f"init_from: only {len(fit)} of the model's {len(ref)} tensors match {path}: "
            f"not weights of this architecture"
        )
    model.load_state_dict(fit, strict=False)
    fresh = sorted(k for k in ref if k not in fit)
    return f"init_from {source}: {len(fit)} of {len(ref)} tensors loaded" + (
        f"; fresh: {', '.join(fresh)}" if fresh else ""
    )


def train(
    cfg: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    command: str | None = None,
    stop_after: int | None = None,
    overrides: list[str] = (),
) -> dict:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue the run there
    (``cfg=None``: the run's own config, with ``overrides`` such as
    ``max_steps=...`` applied).

    Returns a summary dict (steps, best validation ELBO, throughput).
    ``stop_after`` ends the process's work after that many steps without a
    final checkpoint, as a kill would (used by the resume tests).
    """
    out_dir = Path(out_dir)
    ckpt = None
    if resume:
        path = out_dir / CKPT
        if not path.is_file():
            raise VaekitError(f"nothing to resume: {path} does not exist")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise VaekitError(f"cannot read checkpoint {path}: {e}") from None
        saved_dict = dict(ckpt["config"])
        for item in overrides:
            apply_override(saved_dict, item)
        saved = TrainConfig.from_dict(saved_dict, source=str(path))
        if cfg is not None and (cfg.model, cfg.model_args) != (saved.model, saved.model_args):
            raise VaekitError(
                f"cannot resume {path}: it holds a {saved.model} {saved.model_args}, "
                f"the config asks for a {cfg.model} {cfg.model_args}"
            )
        cfg = saved if cfg is None else cfg
    if cfg is None:
        raise VaekitError("give a config file, or --resume with a run folder")

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # subnormal floats cost x86 CPUs many times a normal one
    info = D.setup(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if cfg.batch_size % info.world_size:
        raise VaekitError(f"batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes")
    local_bs = cfg.batch_size // info.world_size

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    train_ds, val_ds = build_datasets(cfg)
    model = create_model(cfg.model, **cfg.model_args).to(device)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise VaekitError(
                f"checkpoint in {out_dir} does not fit model {cfg.model}: {str(e).splitlines()[0]}"
            ) from None
    if ckpt is None and cfg.init_from:
        note = init_weights(model, cfg.init_from, cfg.init_exclude)
        if info.is_main and not quiet:
            print(note, file=sys.stderr)
    if cfg.trainable:  # the rest is frozen (before DDP wraps the model)
        names = [k for k, _ in model.named_parameters() if k.startswith(tuple(cfg.trainable))]
        if not names:
            raise VaekitError(f"trainable: no parameter of {cfg.model} starts with {', '.join(cfg.trainable)}")
        for k, p in model.named_parameters():
            p.requires_grad_(k in names)
    # the weights that are validated and saved: the moving average's copy when there is one
    ema = AveragedModel(model, multi_avg_fn=ema_update(cfg.ema)) if cfg.ema else None
    judged = model if ema is None else ema.module
    ddp_model = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler = DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    steps_per_epoch = len(sampler) // local_bs
    if steps_per_epoch == 0:
        raise VaekitError(f"the training set ({len(train_ds)} items) is smaller than one batch ({cfg.batch_size})")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))

    step, best, best_step, wall = 0, -math.inf, -1, 0.0
    history: list[dict] = []
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, best, best_step, wall = ckpt["step"], ckpt["best_val_elbo"], ckpt["best_step"], ckpt["wall_time_s"]
        history = json.loads(ckpt["history"])
        if ema is not None and "ema" in ckpt:  # a run that gains an average on resume starts it from here
            ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["rng"][info.rank] if info.rank < len(ckpt["rng"]) else ckpt["rng"][0])
    else:
        torch.manual_seed(cfg.seed * 1000 + info.rank)  # latent noise differs across ranks

    writer = None
    if cfg.tensorboard and info.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise VaekitError(
                "tensorboard logging asked for but the tensorboard package is not installed (pip install tensorboard)"
            ) from None
        writer = SummaryWriter(str(out_dir / "tb"))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            atomic_write_text(out_dir / "config.yaml", __import__("yaml").safe_dump(cfg.to_dict(), sort_keys=False))
        else:  # a killed run may have logged past its last checkpoint: keep the log true to the state we resume
            atomic_write_text(out_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    hardware = _hardware(device) + (f" x {info.world_size} processes" if info.enabled else "")
    bar = None
    if info.is_main and not quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)
    data_gen = torch.Generator()
    eval_every = cfg.eval_every or steps_per_epoch

    def save_checkpoint():
        rngs = [torch.get_rng_state()]
        if info.enabled:
            gathered = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, torch.get_rng_state())
            rngs = gathered
        if info.is_main:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "step": step,
                    "best_val_elbo": best,
                    "best_step": best_step,
                    "wall_time_s": wall,
                    "rng": rngs,
                    "config": cfg.to_dict(),
                    "arch": cfg.model,
                    "vaekit": __version__,
                    "history": json.dumps(history),
                }
                | ({"ema": ema.state_dict()} if ema is not None else {}),
                out_dir / CKPT,
            )

    def card(val: dict) -> dict:
        return {
            "name": out_dir.name,
            "arch": cfg.model,
            "arch_args": cfg.model_args,
            "data": {
                "kind": cfg.data,
                "data_dir": str(cfg.data_dir),
                "binarize": cfg.binarize,
                "train_items": len(train_ds),
                "val_items": len(val_ds),
                "validation": "the last val_size items of the training split",
            },
            "training": {
                "command": command,
                "config": cfg.to_dict(),
                "hardware": hardware,
                "wall_time_s": round(wall, 1),
                "steps": step,
                "best_step": step,
                "vaekit": __version__,
                "torch": torch.__version__,
            },
            "metrics": {"val_elbo": round(val["elbo"], 4), "val_kl": round(val["kl"], 4)},
        }

    thr_imgs, thr_time = 0, 0.0
    model.train()
    t_budget = time.perf_counter()
    amp_on = cfg.amp == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp_on else contextlib.nullcontext()

    while step < total:
        epoch, first = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        indices = list(sampler)
        for b in range(first, steps_per_epoch):
            t0 = time.perf_counter()
            data_gen.manual_seed((cfg.seed * 1_000_003 + step) * 64 + info.rank)
            if getattr(train_ds, "binarize", False):
                train_ds.set_generator(data_gen)
            kl_w = min(1.0, (step + 1) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else 1.0
            with autocast():
                x, out = _forward(model, ddp_model, train_ds, indices[b * local_bs : (b + 1) * local_bs], device)
                m = model.loss(x, out, kl_weight=kl_w)
            opt.zero_grad(set_to_none=True)
            m["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_value = float(m["loss"].detach())
            dt = time.perf_counter() - t0
            wall += dt
            thr_imgs += x.shape[0] * info.world_size
            thr_time += dt
            if not math.isfinite(loss_value):
                raise VaekitError(
                    f"training diverged at step {step} (loss is {loss_value}); lower lr or set grad_clip", exit_code=1
                )
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(
                        loss=f"{loss_value:.2f}",
                        kl=f"{float(m['kl']):.1f}",
                        img_s=f"{thr_imgs / max(thr_time, 1e-9):.0f}",
                        refresh=False,
                    )
            if writer is not None and step % 50 == 0:
                for k in ("loss", "elbo", "kl"):
                    writer.add_scalar(f"train/{k}", float(m[k].detach()), step)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
            if step % eval_every == 0 or step == total:
                val = validate(judged, val_ds, 500, device, cfg.seed + 12345)
                history.append(
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "lr": sched.get_last_lr()[0],
                        "train_loss": round(loss_value, 4),
                        **{f"val_{k}": round(v, 4) for k, v in val.items()},
                        "img_per_s": round(thr_imgs / max(thr_time, 1e-9), 1),
                    }
                )
                if info.is_main:
                    with open(out_dir / "log.jsonl", "a") as f:
                        f.write(json.dumps(history[-1]) + "\n")
                    if writer is not None:
                        writer.add_scalar("val/elbo", val["elbo"], step)
                # checkpoint selection on the validation ELBO, counted only at full KL weight
                if val["elbo"] > best and kl_w >= 1.0:
                    best, best_step = val["elbo"], step
                    if info.is_main:
                        from ..pretrained import save_model

                        save_model(judged, out_dir, card(val))
            if stop_after is not None and step >= stop_after:
                if bar is not None:
                    bar.close()
                del ddp_model
                D.teardown(info)
                return {"steps": step, "stopped": True}
            out_of_time = cfg.time_budget_s and time.perf_counter() - t_budget >= cfg.time_budget_s
            if step % cfg.ckpt_every == 0 or step == total or out_of_time:
                save_checkpoint()
            if out_of_time:
                total = step  # the run ends here: the closing validation keeps the best weights
                if info.is_main:
                    from ..pretrained import save_model

                    val = validate(judged, val_ds, 500, device, cfg.seed + 12345)
                    if val["elbo"] > best or best_step < 0:
                        best, best_step = val["elbo"], step
                        save_model(judged, out_dir, card(val))
            if step >= total:
                break
    if bar is not None:
        bar.close()
    if best_step < 0 and info.is_main:  # e.g. warm-up longer than the run: keep the final weights
        from ..pretrained import save_model

        val = validate(judged, val_ds, 500, device, cfg.seed + 12345)
        best, best_step = val["elbo"], step
        save_model(judged, out_dir, card(val))
    del ddp_model
    D.teardown(info)
    throughput = thr_imgs / max(thr_time, 1e-9)
    summary = {
        "steps": step,
        "best_val_elbo": best,
        "best_step": best_step,
        "img_per_s": throughput,
        "model": cfg.model,
        "batch_size": cfg.batch_size,
        "hardware": hardware,
        "wall_time_s": wall,
    }
    if info.is_main and not quiet:
        print(
            f"trained {cfg.model} for {step} steps: {throughput:.0f} images/s (batch {cfg.batch_size}, {hardware}); "
            f"best validation ELBO {best:.2f} nats at step {best_step}; weights in {out_dir}",
            file=sys.stderr,
        )
    return summary
