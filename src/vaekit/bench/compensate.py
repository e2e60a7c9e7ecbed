"""``vaekit bench compensate``: exposure / contrast / colour-cast correction on seeded synthetic
degradations of test photos, every method on the same degraded bytes.

Per image i of a set, the degradation is drawn from ``numpy.random.default_rng(seed * 1_000_003 + i)``:
gain 0.3-3 and gamma 0.5-2 (log-uniform) and a per-channel cast within +-30%
(``tasks.compensate.random_degradation``), recorded in the JSON.  PSNR (8-bit,
peak 255) and SSIM of each method's output against the original; median
seconds per image, in-process, one thread count for all.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..baselines import BASELINES
from ..errors import VaekitError
from ..metrics import psnr, ssim
from .common import command_line, options, provenance, save_png, write_results

CLASSICAL_METHODS = tuple(BASELINES["compensate"])


def _score(ref: np.ndarray, out: np.ndarray) -> dict:
    a = torch.from_numpy(np.ascontiguousarray(ref)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].float() / 255
    return {"psnr": float(psnr(a, b)[0]), "ssim": float(ssim(a, b)[0])}


DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "data_root": None,
    "sets": "kodak",
    "methods": None,
    "model": "compensate-vae",
    "limit": None,
    "output": "results",
    "seed": 0,
}


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)
    from PIL import Image

    from ..pretrained import load_model
    from ..tasks import compensate as C

    root = Path(args.data_root)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else ["none", *CLASSICAL_METHODS, "vae"]
    for m in methods:
        if m not in ("none", "vae", *CLASSICAL_METHODS):
            raise VaekitError(f"unknown method {m!r}; known: none, vae, {', '.join(CLASSICAL_METHODS)}")
    model = load_model(args.model) if "vae" in methods else None
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    command = command_line(args)
    payloads = {}
    for set_name in sets:
        d = root / set_name
        if not d.is_dir():
            raise VaekitError(f"{d} is not a folder (--data-root {root}, set {set_name})")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"))
        if args.limit:
            files = files[: args.limit]
        if not files:
            raise VaekitError(f"no images in {d}")
        rows = []
        for i, f in enumerate(files):
            img = np.array(Image.open(f).convert("RGB"))
            params = C.random_degradation(np.random.default_rng(args.seed * 1_000_003 + i))
            y = C.degrade_exposure(img, **params)
            row = {"image": f.name, "degradation": params}
            outputs = [img, y]
            for m in methods:
                t0 = time.perf_counter()
                if m == "none":
                    out, info = y, {}
                elif m == "vae":
                    r = C.compensate(y, method="vae", model=model, seed=args.seed, details=True)
                    out, info = r.image, r.info
                else:
                    r = C.compensate(y, method=m, details=True)
                    out, info = r.image, r.info
                if m != "none":
                    outputs.append(out)
                row[m] = {
                    **_score(img, out),
                    "seconds": time.perf_counter() - t0,
                    **({"found": {k: info[k] for k in ("gain", "gamma", "cast")}} if m == "vae" else {}),
                }
            rows.append(row)
            log(f"  {set_name} {f.name}: " + ", ".join(f"{m} {row[m]['psnr']:.2f}" for m in methods))
            if i == 0:
                _picture(Path(args.output) / f"compensate-{set_name}.png", outputs)
        summary = {
            m: {
                "psnr": statistics.mean(r[m]["psnr"] for r in rows),
                "ssim": statistics.mean(r[m]["ssim"] for r in rows),
                "seconds_median": statistics.median(r[m]["seconds"] for r in rows),
            }
            for m in methods
        }
        best_classical = max(
            (m for m in methods if m in CLASSICAL_METHODS), key=lambda m: summary[m]["psnr"], default=None
        )
        payload = {
            "task": "compensate",
            "set": set_name,
            "n_images": len(rows),
            "command": command,
            "protocol": "y = clip(gain * cast * x, 0, 1) ** gamma, gain 0.3-3, gamma 0.5-2 (log-uniform), "
            "cast 0.7-1.3 per channel; PSNR/SSIM of each output vs the original (8-bit)",
            "model": args.model if model is not None else None,
            "provenance": provenance(
                {"degradations": args.seed}, (getattr(model, "card", {}) or {}).get("sha256") if model else None
            ),
            "summary": summary,
            "best_classical": best_classical,
            "per_image": rows,
        }
        md = ["| method | PSNR dB | SSIM | median s/image |", "|---|---|---|---|"]
        for m in methods:
            md.append(
                f"| {m} | {summary[m]['psnr']:.2f} | {summary[m]['ssim']:.4f} | {summary[m]['seconds_median']:.3f} |"
            )
        if best_classical and "vae" in summary:
            md += [
                "",
                f"VAE − best classical ({best_classical}): "
                f"{summary['vae']['psnr'] - summary[best_classical]['psnr']:+.2f} dB",
            ]
        md += [
            "",
            f"{len(rows)} images of {set_name}, seeded degradations (seed {args.seed}); "
            f"{torch.get_num_threads()} thread(s).",
            "",
            f"Reproduce: `{command}`",
            "",
        ]
        write_results(Path(args.output), f"compensate-{set_name}", payload, "\n".join(md))
        print(f"## {set_name}\n" + "\n".join(md))
        payloads[set_name] = payload
    return payloads


def _picture(path: Path, tiles, height: int = 256):
    """One image across methods (original, degraded, then each method), side by side, ``height`` px tall."""
    from PIL import Image

    small = [
        np.asarray(
            Image.fromarray(t).resize(
                (max(1, round(t.shape[1] * height / t.shape[0])), height), Image.Resampling.LANCZOS
            )
        )
        for t in tiles
    ]
    save_png(np.concatenate(small, axis=1), path)
