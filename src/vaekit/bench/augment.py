"""``vaekit bench augment``: does latent augmentation help a few-label classifier?

Protocol (../shared/ANCHORS.md "Augmentation"): MNIST, 10 labelled training
images per class drawn with each of 5 seeds; the same small CNN
(conv 32 - conv 64 - maxpool - dropout - fc 128 - fc 10), Adam 1e-3, batch
100, a fixed number of steps, trained from the same initialisation with

* ``none``       the 100 images as they are,
* ``classical``  a fresh random affine per draw (+-15 degrees, +-2 px, scale 0.9-1.1),
* ``vae``        the 100 images plus ``variants`` latent variants of each
                 (the generative VAE's posterior noise x ``strength``),
* ``vae+classical`` the VAE pool, each draw then given a random affine;
* ``gen``        half of every batch from ``generated`` images sampled from the
                 VAE's prior, labelled by the ``none`` classifier of the same
                 seed and kept where its softmax confidence exceeds 0.9
                 (self-training on the model's samples: no image beyond the
                 100 labelled ones and the VAE's weights is used),
* ``gen+classical`` the same with the ``classical`` classifier as the labeller
                 and a random affine on every draw;
* ``tangent``    the 100 images plus ``tangent_variants`` moves of each along random mixes of
                 the decoder's ``tangent_k`` strongest latent directions at its
                 posterior mean, ``tangent_strength`` prior standard deviations per
                 direction (``tasks.augment.tangent_variants``: the VAE's own modes of
                 variation around the image);
* ``tangent+classical`` that pool, each draw then given a random affine;
* ``nbr``        the 100 images plus, for each, its ``neighbours`` nearest of
                 ``pool`` VAE prior samples in latent space, labelled as it
                 (``tasks.augment.PriorPool``: no classifier, no image beyond
                 the 100 and the VAE's weights);

test accuracy over all 10,000 test images; mean +- std over the seeds and the
paired difference per seed.  The VAE (default the shipped ``mnist-vae``) was
trained on MNIST training images without their labels.  ``--split val``
measures on the last 10,000 training images instead (for choosing strength
and variants before the test set is read).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import VaekitError
from ..tasks.augment import DEFAULT_STRENGTH
from .common import command_line, options, provenance, save_figure, write_results

ARMS = ("none", "classical", "vae", "vae+classical", "tangent", "tangent+classical", "gen", "gen+classical", "nbr")
# chosen on the val split in exploratory runs (first 5,000 of the last 10,000 training images; mean gain over
# none): 10 variants at strength 2 +3.3 points (seeds 0-1), 3 +5.9 (seeds 0-2), 4 +7.3 (seeds 0-1; outside the
# CLI's 0-3); at strength 3, 10 / 20 / 40 variants per image +4.8 / +6.3 / +7.7 (seeds 0-2); a fresh move for
# every draw, as the classical arm makes, was no better than 40 (seeds 0-1)
TANGENT_STRENGTH = DEFAULT_STRENGTH["tangent"]  # 3.0
TANGENT_K = 10
TANGENT_VARIANTS = 40
GEN_CONFIDENCE = 0.9


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


def few_label_subset(labels: np.ndarray, per_class: int, seed: int, pool: int) -> np.ndarray:
    """Indices of ``per_class`` images of each class among the first ``pool`` items."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(10):
        idx = np.flatnonzero(labels[:pool] == c)
        out.append(rng.choice(idx, per_class, replace=False))
    return np.concatenate(out)


def _affine_batch(x: np.ndarray, rng) -> np.ndarray:
    from ..enhance import random_affine

    return np.stack([random_affine(img[0], rng)[None] for img in x]).astype(np.float32)


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    seed: int,
    classical: bool,
    batch: int = 100,
    lr: float = 1e-3,
    extra=None,
) -> nn.Module:
    """``extra``: an optional second pool (x, y); half of every batch is drawn from it."""
    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr)
    rng = np.random.default_rng(seed + 7)
    net.train()
    own = batch if extra is None or len(extra[0]) == 0 else batch // 2
    for _ in range(steps):
        idx = rng.integers(0, len(x), own)
        xb, yb = x[idx], y[idx]
        if own < batch:
            j = rng.integers(0, len(extra[0]), batch - own)
            xb, yb = np.concatenate([xb, extra[0][j]]), np.concatenate([yb, extra[1][j]])
        if classical:
            xb = _affine_batch(xb, rng)
        loss = nn.functional.cross_entropy(net(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        correct += int((net(torch.from_numpy(x[i : i + 1000])).argmax(1).numpy() == y[i : i + 1000]).sum())
    return correct / len(x)


def vae_pool(model, x: np.ndarray, y: np.ndarray, variants: int, strength: float, seed: int):
    from ..tasks.augment import latent_variants

    v = latent_variants(model, torch.from_numpy(x), variants, strength=strength, seed=seed).numpy()
    vx = v.reshape((-1,) + x.shape[1:])
    vy = np.repeat(y, variants)
    return np.concatenate([x, vx]).astype(np.float32), np.concatenate([y, vy])


def tangent_pool(model, x: np.ndarray, y: np.ndarray, variants: int, strength: float, k: int, seed: int):
    from ..tasks.augment import tangent_variants

    v = tangent_variants(model, torch.from_numpy(x), variants, strength=strength, k=k, seed=seed).numpy()
    return (
        np.concatenate([x, v.reshape((-1,) + x.shape[1:])]).astype(np.float32),
        np.concatenate([y, np.repeat(y, variants)]),
    )


PAIRS = (
    ("vae+classical", "classical"),
    ("vae", "none"),
    ("tangent+classical", "classical"),
    ("tangent", "none"),
    ("gen+classical", "classical"),
    ("gen", "none"),
    ("nbr", "none"),
    ("classical", "none"),
)


@torch.no_grad()
def generated_pool(model, teacher, n: int, seed: int, confidence: float = GEN_CONFIDENCE):
    """``n`` prior samples of ``model`` (likelihood means) labelled by ``teacher``; the confident ones."""
    torch.manual_seed(seed)
    model.eval()
    teacher.eval()
    xs = model.sample(n).clamp(0, 1).float()
    p = torch.softmax(torch.cat([teacher(xs[i : i + 1000]) for i in range(0, n, 1000)]), 1)
    conf, lab = p.max(1)
    keep = (conf > confidence).numpy()
    return xs.numpy()[keep], lab.numpy()[keep].astype(np.int64)


def neighbour_pool(model, x: np.ndarray, y: np.ndarray, neighbours: int, pool: int, seed: int):
    """The labelled images plus their ``neighbours`` nearest prior samples each, labelled as them."""
    from ..tasks.augment import PriorPool

    found = PriorPool(model, pool, seed=seed).nearest(model, torch.from_numpy(x), neighbours)[0].numpy()
    nx = found.reshape((-1,) + x.shape[1:])
    return np.concatenate([x, nx]).astype(np.float32), np.concatenate([y, np.repeat(y, neighbours)])


def run_arms(
    model,
    train_x,
    train_y,
    eval_x,
    eval_y,
    *,
    seeds,
    per_class,
    steps,
    variants,
    strength,
    pool,
    generated: int = 20000,
    neighbours: int = 10,
    prior_pool: int = 50000,
    tangent_strength=TANGENT_STRENGTH,
    tangent_k=TANGENT_K,
    tangent_variants=TANGENT_VARIANTS,
    arms=ARMS,
    log=print,
):
    per_seed = []
    for seed in seeds:
        idx = few_label_subset(train_y, per_class, seed, pool)
        x, y = train_x[idx], train_y[idx]
        px, py = vae_pool(model, x, y, variants, strength, seed)
        tx_, ty_ = (
            tangent_pool(model, x, y, tangent_variants, tangent_strength, tangent_k, seed)
            if any(a.startswith("tangent") for a in arms)
            else (None, None)
        )
        row = {"seed": seed, "indices": idx.tolist()}
        nets = {}
        for arm in arms:
            t0 = time.perf_counter()
            classical = arm.endswith("classical")
            if arm == "nbr":
                net = train_classifier(
                    *neighbour_pool(model, x, y, neighbours, prior_pool, seed), steps=steps, seed=seed, classical=False
                )
            elif arm.startswith("gen"):
                teacher = nets["classical" if classical else "none"]
                gx, gy = generated_pool(model, teacher, generated, seed)
                row[f"{arm}_kept"] = int(len(gx))
                net = train_classifier(x, y, steps=steps, seed=seed, classical=classical, extra=(gx, gy))
            else:
                data = (x, y) if arm in ("none", "classical") else (tx_, ty_) if arm.startswith("tangent") else (px, py)
                net = train_classifier(*data, steps=steps, seed=seed, classical=classical)
            if arm in ("none", "classical"):
                nets[arm] = net
            row[arm] = accuracy(net, eval_x, eval_y)
            row[f"{arm}_seconds"] = time.perf_counter() - t0
        per_seed.append(row)
        log(f"  seed {seed}: " + ", ".join(f"{a} {row[a] * 100:.2f}%" for a in arms))
    summary = {}
    for arm in arms:
        accs = [r[arm] * 100 for r in per_seed]
        summary[arm] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    for a, b in PAIRS:
        if a not in arms or b not in arms:
            continue
        d = [(r[a] - r[b]) * 100 for r in per_seed]
        summary[f"{a} - {b}"] = {"mean": statistics.mean(d), "std": statistics.stdev(d) if len(d) > 1 else 0.0}
    return per_seed, summary


DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "data_dir": None,
    "model": "mnist-vae",
    "seeds": 5,
    "per_class": 10,
    "steps": 300,
    "variants": 10,
    "strength": 0.5,
    "tangent_strength": None,
    "tangent_k": None,
    "tangent_variants": None,
    "generated": 20000,
    "neighbours": 10,
    "pool": 50000,
    "split": "test",
    "limit": None,
    "output": "results",
}


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)
    from .. import data as vd
    from ..pretrained import load_model
    from ..tasks.augment import check_strength

    if getattr(args, "tangent_strength", None) is None:
        args.tangent_strength = TANGENT_STRENGTH
    if getattr(args, "tangent_k", None) is None:
        args.tangent_k = TANGENT_K
    if getattr(args, "tangent_variants", None) is None:
        args.tangent_variants = TANGENT_VARIANTS
    if args.tangent_variants < 1:
        raise VaekitError(f"--tangent-variants must be at least 1, got {args.tangent_variants}")
    check_strength(args.tangent_strength)
    if args.tangent_k < 1:
        raise VaekitError(f"--tangent-k must be at least 1, got {args.tangent_k}")
    data_dir = Path(args.data_dir)
    tx, ty = vd.mnist_tensors(data_dir, "train")
    train_x, train_y = tx.numpy().astype(np.float32), ty.numpy().astype(np.int64)
    pool = len(train_x) - 10000  # labelled subsets come from the first 50,000; the last 10,000 validate
    if args.split == "val":
        eval_x, eval_y = train_x[pool:], train_y[pool:]
    else:
        ex, ey = vd.mnist_tensors(data_dir, "test")
        eval_x, eval_y = ex.numpy().astype(np.float32), ey.numpy().astype(np.int64)
    if args.limit:
        eval_x, eval_y = eval_x[: args.limit], eval_y[: args.limit]
    model = load_model(args.model)
    seeds = list(range(args.seeds))
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    log(
        f"bench augment: {args.per_class} labels/class, {len(seeds)} seeds, {args.steps} steps, "
        f"{args.variants} VAE variants/image at strength {args.strength}, eval on {len(eval_x)} {args.split} images"
    )
    per_seed, summary = run_arms(
        model,
        train_x,
        train_y,
        eval_x,
        eval_y,
        seeds=seeds,
        per_class=args.per_class,
        steps=args.steps,
        variants=args.variants,
        strength=args.strength,
        pool=pool,
        generated=args.generated,
        neighbours=args.neighbours,
        prior_pool=args.pool,
        tangent_strength=args.tangent_strength,
        tangent_k=args.tangent_k,
        tangent_variants=args.tangent_variants,
        log=log,
    )
    card = getattr(model, "card", {}) or {}
    command = command_line(args)
    payload = {
        "task": "augment",
        "set": f"mnist-{args.split}",
        "command": command,
        "protocol": {
            "per_class": args.per_class,
            "seeds": seeds,
            "steps": args.steps,
            "batch": 100,
            "optimizer": "Adam 1e-3",
            "cnn": "conv32-conv64-maxpool-dropout0.25-fc128-dropout0.5-fc10",
            "classical": "random affine +-15 deg, +-2 px, scale 0.9-1.1, fresh per draw",
            "vae": f"{args.variants} latent variants per labelled image, strength {args.strength}",
            "tangent": f"{args.tangent_variants} moves per labelled image along random mixes of the "
            f"decoder's {args.tangent_k} strongest latent directions at the posterior "
            f"mean, {args.tangent_strength} prior std per direction",
            "gen": f"{args.generated} prior samples of the VAE labelled by the same seed's none / "
            f"classical classifier, kept at softmax confidence > {GEN_CONFIDENCE}; half of "
            "every batch",
            "nbr": f"each labelled image plus its {args.neighbours} nearest of {args.pool} VAE prior "
            "samples (cosine similarity of centred posterior means), labelled as it",
            "vae_training": "the VAE saw MNIST training images without labels",
            "eval_images": len(eval_x),
        },
        "model": args.model,
        "model_data": card.get("data"),
        "provenance": provenance({"subsets": seeds}, card.get("sha256")),
        "summary": summary,
        "per_seed": per_seed,
    }
    md = [f"| augmentation | test accuracy (mean ± std, {len(seeds)} seeds) |", "|---|---|"]
    for arm in ARMS:
        md.append(f"| {arm} | {summary[arm]['mean']:.2f} ± {summary[arm]['std']:.2f}% |")
    md += ["", "| paired difference | mean ± std (points) |", "|---|---|"]
    for k in (f"{a} - {b}" for a, b in PAIRS):
        md.append(f"| {k} | {summary[k]['mean']:+.2f} ± {summary[k]['std']:.2f} |")
    md += [
        "",
        f"MNIST, {args.per_class} labelled images per class; {args.steps} steps of batch 100; "
        f"{len(eval_x)} {args.split} images. The VAE ({args.model}) was trained without labels. "
        f"vae: {args.variants} latent variants of each labelled image at strength {args.strength}; "
        f"tangent: {args.tangent_variants} moves of each along random mixes of the decoder's "
        f"{args.tangent_k} strongest latent directions, {args.tangent_strength} prior std each; "
        f"gen: {args.generated} VAE prior samples labelled by that seed's none/classical classifier "
        f"(kept at confidence > {GEN_CONFIDENCE}), half of each batch; nbr: each labelled image plus its "
        f"{args.neighbours} nearest of {args.pool} VAE prior samples in latent space, labelled as it.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    out_dir = Path(args.output)
    stem = f"augment-mnist{'-val' if args.split == 'val' else ''}"
    write_results(out_dir, stem, payload, "\n".join(md))
    _plot(out_dir / f"{stem}.png", summary, per_seed)
    print("\n".join(md))
    return payload


def _plot(path, summary, per_seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for i, arm in enumerate(ARMS):
        ax.bar(i, summary[arm]["mean"], yerr=summary[arm]["std"], capsize=4, color=f"C{i}")
        ax.scatter([i] * len(per_seed), [r[arm] * 100 for r in per_seed], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(ARMS)), ARMS, rotation=30, ha="right")
    lo = min(r[a] for r in per_seed for a in ARMS) * 100
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST, 10 labels per class")
    fig.tight_layout()
    save_figure(fig, path)
    if not path.exists():
        raise VaekitError(f"could not write {path}")
