"""Tune the classical denoisers' sigma-proportional parameters on Set12 (never BSD68).

    python scripts/tune_denoise_baselines.py --data-dir ../shared/data/set12

For each method, a grid of its one factor; the factor with the best mean PSNR
over sigma 15/25/50 (DnCNN protocol, seeded noise) is printed, to be frozen in
src/vaekit/baselines.py.  One thread, like the benchmark.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vaekit import baselines as B  # noqa: E402
from vaekit.bench_denoise import load_set, psnr_u8  # noqa: E402
from vaekit.degrade import gaussian  # noqa: E402

GRIDS = {"nlm": ("NLM_H", [0.6, 0.7, 0.8, 0.9, 1.0]),
         "opencv-nlm": ("CV_NLM_H", [0.8, 0.9, 1.0, 1.1, 1.2]),
         "tv": ("TV_WEIGHT", [0.0015, 0.002, 0.0025, 0.003, 0.0035]),
         "gaussian": ("GAUSS_PX", [0.02, 0.025, 0.03, 0.035, 0.04, 0.05])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--methods", default=",".join(GRIDS))
    a = ap.parse_args()
    images = load_set(a.data_dir, "L")
    sigmas = [float(s) for s in a.sigmas.split(",")]
    for m in a.methods.split(","):
        const, grid = GRIDS[m]
        scores = {}
        for v in grid:
            setattr(B, const, v)
            ps = [psnr_u8(B.get(m)(gaussian(x, s, seed=i), s), x) for s in sigmas for i, (_, x) in enumerate(images)]
            scores[v] = float(np.mean(ps))
            print(f"{m} {const}={v}: {scores[v]:.3f}", flush=True)
        best = max(scores, key=scores.get)
        print(f"==> {m}: {const} = {best} ({scores[best]:.3f} dB mean over sigma {a.sigmas})", flush=True)


if __name__ == "__main__":
    main()
