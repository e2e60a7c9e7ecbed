"""Train the priority models on a lent GPU for a fixed few minutes, from their current weights, and bring them back.

    python scripts/gpu_train.py stage                    # here: builds .gpu/ (crops, start weights, wheels)
    # then one device call (see docs/training.md):  carry [".gpu"], timeout_s 600,
    #   command: PYTHONUNBUFFERED=1 python3 scripts/gpu_train.py train --minutes 8 --out $OUT
    python scripts/gpu_train.py fetch FILES_AT           # here: the returned weights -> runs/<name>-gpu/

``stage`` writes, under the git-ignored ``.gpu/`` (what a device call carries beside the tracked tree, which must
stay under 64 MiB together): random 256 x 256 crops of the photos train split, area-downscaled by 2 like the CPU
recipes (PNG, about 6 MB, with a SPLITS.tsv that holds a few back for validation), each job's start weights stored
int8 (``--start``, else the shipped model), and the wheels the GPU image lacks. It prints the size of what a call
will carry, the tracked tree included: over 60 MiB is refused there (64 MiB, less what git does not show).

``train`` runs every job of ``JOBS`` side by side on the one GPU, each ``vaekit train`` with a wall budget
(``time_budget_s``), ``init_from`` its start weights, bf16 autocast where the job allows it, and a constant learning
rate (a fine-tune that may stop at any step) whose weights are averaged (``ema``). Each run's best weights, card and
log are copied to ``--out`` (the optimizer state is not: it would not fit the files a call brings back).

``fetch`` copies them to ``runs/<job>-gpu/``; a CPU run continues from there with
``init_from=runs/<job>-gpu/model.safetensors``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> recipe and overrides; a job starts from the run given to ``stage --start NAME=RUN``, else from the shipped
# model of its name where there is one, else from scratch
JOBS = {
    "denoise-color": {
        "config": "configs/denoise-color-opponent.yaml",
        "overrides": [
            "model_args.decoder_blocks=1",  # the shipped model's decoder blocks
            "amp=bf16",
            "batch_size=32",
            "patch_size=128",
            "lr=1e-4",
            "schedule=constant",
            "warmup_steps=0",
            "kl_warmup_steps=0",
            "downscale=1",
            "patches_per_image=256",
            "val_patches_per_image=4",
        ],
    },
    "denoise-gray": {
        "config": "configs/denoise-gray-photos.yaml",
        "overrides": [
            "amp=bf16",
            "batch_size=64",
            "patch_size=128",
            "lr=1e-4",
            "schedule=constant",
            "warmup_steps=0",
            "downscale=1",
            "patches_per_image=256",
            "val_patches_per_image=4",
        ],
    },
    "codec-hyperprior": {  # the shipped codec grown to more latent channels and a higher quality
        "config": "configs/codec-wide.yaml",
        "overrides": [
            "batch_size=16",
            "patch_size=256",
            "lr=1e-4",
            "schedule=constant",
            "warmup_steps=0",
            "patches_per_image=64",
            "val_patches_per_image=2",
            "threads=0",
        ],
    },
}
WHEELS = ["constriction==0.4.1"]


def stage(stage_dir: Path, photos: Path, crops: int, seed: int, runs: dict, wheels: bool = True) -> None:
    """Crops, start weights and wheels under ``stage_dir``."""
    import numpy as np
    import torch
    from PIL import Image

    from vaekit import data as vd
    from vaekit.pretrained import load_model, save_model

    out = stage_dir / "photos"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train, _ = vd.split_by_file(vd.find_images(photos), photos / "SPLITS.tsv")
    rng = np.random.default_rng(seed)
    rows = ["file\tsplit"]
    for i in range(crops):
        f = train[int(rng.integers(len(train)))]
        x = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))  # area-downscale by 2, as the recipes do
        if min(x.shape[:2]) < 256:
            continue
        top, left = int(rng.integers(x.shape[0] - 255)), int(rng.integers(x.shape[1] - 255))
        name = f"c{i:04d}.png"
        Image.fromarray(np.round(x[top : top + 256, left : left + 256]).astype(np.uint8)).save(out / name)
        rows.append(f"{name}\t{'val' if i % 16 == 0 else 'train'}")
    (out / "SPLITS.tsv").write_text("\n".join(rows) + "\n")
    for name, start in runs.items():
        if name not in JOBS:
            raise SystemExit(f"unknown job {name!r}; jobs: {', '.join(JOBS)}")
        m = load_model(start)
        save_model(m, stage_dir / "start" / name, dict(m.card, name=name), dtype=torch.int8)
    whl = stage_dir / "whl"
    if wheels and not any(whl.glob("*.whl")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                "--platform",
                "manylinux_2_17_x86_64",
                "--platform",
                "manylinux2014_x86_64",
                "-d",
                str(whl),
                *WHEELS,
            ],
            check=False,
        )
    size = sum(p.stat().st_size for p in stage_dir.rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False).stdout
    tree = sum((ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (ROOT / f).is_file())
    print(
        f"staged {len(rows) - 1} crops, start weights and wheels in {stage_dir}: {size / 2**20:.1f} MiB; "
        f"with the tracked tree {(size + tree) / 2**20:.1f} MiB to carry"
    )
    if size + tree > 60 * 2**20:
        raise SystemExit("too large for a device call: stage fewer --crops")


def train(stage_dir: Path, minutes: float, out: Path, device: str, jobs, extra=()) -> int:
    """Every job side by side for ``minutes``, then the results into ``out``."""
    env = dict(os.environ)
    site = Path("/tmp/vaekit-site")
    wheels = sorted((stage_dir / "whl").glob("*.whl"))
    if device == "cuda" and wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            check=False,
        )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(site), env.get("PYTHONPATH", "")])
    sys.path[:0] = [str(ROOT / "src"), str(site)]  # the GPU image has no vaekit installed
    from vaekit.pretrained import SHIPPED

    work = out / ".runs"  # the runs themselves (optimizer state too) stay on the machine
    shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in jobs:
        job = JOBS[name]
        start = stage_dir / "start" / name / "model.safetensors"
        init = str(start) if start.is_file() else (name if name in SHIPPED else None)
        over = [
            *job["overrides"],
            f"device={device}",
            f"time_budget_s={minutes * 60:.1f}",
            "max_steps=1000000",
            "ckpt_every=1000000",
            "eval_every=500",
            "ema=0.999",  # the constant learning rate's anneal: the kept weights are the average's
            *extra,
        ]
        over += [f"init_from={init}"] if init else []
        if device != "cuda":
            over = [o for o in over if not o.startswith("amp=")]
        cmd = [
            sys.executable,
            "-m",
            "vaekit",
            "train",
            job["config"],
            "--data-dir",
            str(stage_dir / "photos"),
            "-o",
            str(work / name),
            "--quiet",
            *over,
        ]
        procs[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    t0 = time.time()
    summary = {}
    for name, p in procs.items():
        log, _ = p.communicate()
        run = work / name
        summary[name] = {"returncode": p.returncode, "log_tail": log[-2000:], "wall_s": round(time.time() - t0)}
        if (run / "model.safetensors").is_file():
            dest = out / name
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("model.safetensors", "model.json", "log.jsonl"):
                if (run / f).is_file():
                    shutil.copy(run / f, dest / f)
            card = json.loads((run / "model.json").read_text())
            summary[name].update(steps=card["training"].get("steps"), metrics=card.get("metrics"))
    shutil.rmtree(work, ignore_errors=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: {kk: v for kk, v in s.items() if kk != "log_tail"} for k, s in summary.items()}, indent=1))
    return 0 if all(s["returncode"] == 0 for s in summary.values()) else 1


def fetch(src: Path, runs: Path) -> None:
    """The weights a device call brought back, into ``runs/<job>-gpu/``."""
    for name in JOBS:
        if (src / name / "model.safetensors").is_file():
            dest = runs / f"{name}-gpu"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src / name, dest)
            print(f"{dest}: continue with init_from={dest / 'model.safetensors'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default=str(ROOT / ".gpu"), help="the staging folder (carried to the device)")
    sub = ap.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos"))
    s.add_argument("--crops", type=int, default=56)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--start", action="append", default=[], metavar="JOB=RUN", help="the run a job starts from")
    s.add_argument("--no-wheels", action="store_true", help="do not fetch the wheels the GPU image lacks")
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=8.0)
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--jobs", default=",".join(JOBS))
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more override for every job")
    f = sub.add_parser("fetch")
    f.add_argument("src")
    f.add_argument("--runs", default=str(ROOT / "runs"), help="where the runs go (default runs/)")
    a = ap.parse_args()
    if a.verb == "stage":
        stage(
            Path(a.stage),
            Path(a.photos),
            a.crops,
            a.seed,
            dict(kv.split("=", 1) for kv in a.start),
            wheels=not a.no_wheels,
        )
    elif a.verb == "train":
        sys.exit(train(Path(a.stage), a.minutes, Path(a.out), a.device, a.jobs.split(","), a.set))
    else:
        fetch(Path(a.src), Path(a.runs))
