"""Watch a self-supervised fit learn: PSNR of its checkpoints on the fitted and the held-out noisy images.

    python scripts/probe_selfsup.py --data-dir ../shared/data/train400 --n 200 --candidate r2r-6k \
        --work runs/probe-r2r --every 750

Starts ``scripts/tune_selfsup.py`` for one candidate in the background (one thread) and, each time the run's
``checkpoint.pt`` reaches a multiple of ``--every`` steps, scores those weights (the noisy image as it is, and
the mean of 4 recorrupted passes) against the clean train400 images -- training data, so allowed -- split into
the images the fit trains on and the ones it holds out for validation (the last tenth of the sorted files).
A fit that improves on the held-out images while it gets worse on the fitted ones is memorizing their noise.
Lines of JSON go to stdout and ``<work>/probe.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vaekit.bench_denoise import load_set, psnr_u8  # noqa: E402
from vaekit.degrade import gaussian  # noqa: E402
from vaekit.registry import create_model  # noqa: E402
from vaekit.tasks.denoise import vae_denoise  # noqa: E402

RULES = {"direct": {"test_recorruptions": 0, "test_flips": False},
         "recorrupt4": {"test_recorruptions": 4, "test_alpha": 1.0, "test_flips": False}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sigma", type=float, default=25)
    ap.add_argument("--candidate", default="r2r-6k")
    ap.add_argument("--work", required=True)
    ap.add_argument("--every", type=int, default=750)
    ap.add_argument("--score", type=int, default=40, help="fitted images scored per checkpoint (all held-out ones are)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    images = load_set(a.data_dir, "L")[: a.n]
    noisy = [gaussian(x, a.sigma, seed=1000 + i) for i, (_, x) in enumerate(images)]  # as tune_selfsup.py
    n_val = max(1, a.n // 10)  # the fit's split: the last tenth of the sorted files validates
    groups = {"fitted": list(range(min(a.score, a.n - n_val))), "held_out": list(range(a.n - n_val, a.n))}
    here = Path(__file__).resolve().parent
    log = open(work / "fit.log", "a")
    fit = subprocess.Popen([sys.executable, str(here / "tune_selfsup.py"), "--data-dir", a.data_dir, "--n", str(a.n),
                            "--sigma", str(a.sigma), "--candidates", a.candidate, "--rules", "direct",
                            "--work", str(work)], stdout=log, stderr=subprocess.STDOUT)
    ckpt_path = work / a.candidate / "checkpoint.pt"
    done = set()
    while True:
        finished = fit.poll() is not None
        if ckpt_path.is_file():
            try:
                ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 -- caught mid-replace; try again
                ck = None
            if ck is not None and ck["step"] % a.every == 0 and ck["step"] not in done:
                done.add(ck["step"])
                cfg = ck["config"]
                model = create_model(cfg["model"], **cfg["model_args"]).eval()
                model.load_state_dict(ck["model"])
                row = {"step": ck["step"]}
                for rule, attrs in RULES.items():
                    for k, v in attrs.items():
                        setattr(model, k, v)
                    for g, idx in groups.items():
                        ps = [psnr_u8(vae_denoise(model, noisy[i], None, seed=i)[0], images[i][1]) for i in idx]
                        row[f"{g}/{rule}"] = round(float(np.mean(ps)), 3)
                print(json.dumps(row), flush=True)
                with open(work / "probe.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
        if finished:
            break
        time.sleep(15)
    sys.exit(fit.returncode)


if __name__ == "__main__":
    main()
