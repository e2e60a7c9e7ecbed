"""``vaekit bench compensate``: exposure / contrast / colour-cast correction of test photos under three cases,
every method on the same degraded bytes.

Per image i and case k, the parameters come from ``numpy.random.default_rng([seed, i, k])`` through
``tasks.compensate.random_degradation``: "identity" (the photo as it is: the right answer is no change), "mild"
(gain 0.75-1.33, gamma 0.8-1.25, cast +-10%) and "strong" (gain 0.3-3, gamma 0.5-2, cast +-30%), recorded in the
JSON.  PSNR (8-bit, peak 255; capped at 60 dB, which an unchanged output reaches) and SSIM of each method's output
against the original; median seconds per image, in-process, one thread count for all.
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
CASES = ("identity", "mild", "strong")
PSNR_CAP = 60.0


def _score(ref: np.ndarray, out: np.ndarray) -> dict:
    a = torch.from_numpy(np.ascontiguousarray(ref)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].float() / 255
    return {"psnr": min(PSNR_CAP, float(psnr(a, b)[0])), "ssim": float(ssim(a, b)[0])}


DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "data_root": None,
    "sets": "kodak,photos-val",
    "methods": None,
    "model": "compensate-posterior",
    "limit": None,
    "output": "results",
    "seed": 0,
}


def _images(root: Path, set_name: str, limit):
    """(name, uint8 RGB) of a set: a folder of PNG/BMP/TIFF under ``root``, or photos-val."""
    from PIL import Image

    from .denoise import load_photos_val

    if set_name == "photos-val":
        if not (root / "photos" / "SPLITS.tsv").is_file():
            raise VaekitError(f"{root / 'photos'} has no SPLITS.tsv (--data-root {root}, set photos-val)")
        pairs = load_photos_val(root / "photos")[: limit or None]
        return [(n, np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)) for n, a in pairs]
    d = root / set_name
    if not d.is_dir():
        raise VaekitError(f"{d} is not a folder (--data-root {root}, set {set_name})")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"))[: limit or None]
    return [(f.name, np.array(Image.open(f).convert("RGB"))) for f in files]


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)
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
        images = _images(root, set_name, args.limit)
        if not images:
            raise VaekitError(f"no images in set {set_name}")
        rows = []
        for i, (name, img) in enumerate(images):
            row = {"image": name}
            for k, case in enumerate(CASES):
                params = C.random_degradation(np.random.default_rng([args.seed, i, k]), strength=case)
                y = C.degrade_exposure(img, **params)
                cell = {"degradation": params}
                outputs = [img, y]
                for m in methods:
                    t0 = time.perf_counter()
                    if m == "none":
                        out, info = y, {}
                    else:
                        r = C.compensate(y, method=m, model=model, seed=args.seed, details=True)
                        out, info = r.image, r.info
                        outputs.append(out)
                    cell[m] = {**_score(img, out), "seconds": time.perf_counter() - t0}
                    if m == "vae":
                        cell[m]["found"] = {k2: info[k2] for k2 in ("gain", "gamma", "cast", "changed", "p_change")}
                row[case] = cell
                if i == 0 and case == "strong":
                    _picture(Path(args.output) / f"compensate-{set_name}.png", outputs)
            rows.append(row)
            log(
                f"  {set_name} {name}: "
                + "; ".join(f"{c} " + ", ".join(f"{m} {row[c][m]['psnr']:.1f}" for m in methods) for c in CASES)
            )
        summary = {
            case: {
                m: {
                    "psnr": statistics.mean(r[case][m]["psnr"] for r in rows),
                    "ssim": statistics.mean(r[case][m]["ssim"] for r in rows),
                    "seconds_median": statistics.median(r[case][m]["seconds"] for r in rows),
                    **(
                        {"unchanged": statistics.mean(not r[case][m]["found"]["changed"] for r in rows)}
                        if m == "vae"
                        else {}
                    ),
                }
                for m in methods
            }
            for case in CASES
        }
        payload = {
            "task": "compensate",
            "set": set_name,
            "n_images": len(rows),
            "command": command,
            "protocol": "y = clip(gain * cast * x, 0, 1) ** gamma; cases identity, mild (gain 0.75-1.33, gamma "
            "0.8-1.25, cast 0.9-1.1) and strong (gain 0.3-3, gamma 0.5-2, cast 0.7-1.3), log-uniform gain and "
            f"gamma; PSNR (capped at {PSNR_CAP:.0f} dB) and SSIM of each output vs the original (8-bit)",
            "model": args.model if model is not None else None,
            "provenance": provenance(
                {"degradations": args.seed}, (getattr(model, "card", {}) or {}).get("sha256") if model else None
            ),
            "summary": summary,
            "per_image": rows,
        }
        md = [
            "| method | " + " | ".join(f"{c} PSNR dB | {c} SSIM" for c in CASES) + " | median s/image |",
            "|---|" + "---|---|" * len(CASES) + "---|",
        ]
        for m in methods:
            cells = " | ".join(f"{summary[c][m]['psnr']:.2f} | {summary[c][m]['ssim']:.4f}" for c in CASES)
            md.append(f"| {m} | {cells} | {summary['strong'][m]['seconds_median']:.3f} |")
        if "vae" in methods:
            md += [
                "",
                "Learned posterior left unchanged: "
                + ", ".join(f"{c} {100 * summary[c]['vae']['unchanged']:.0f}%" for c in CASES)
                + " of the images.",
            ]
        md += [
            "",
            f"{len(rows)} images of {set_name}, seeded degradations (seed {args.seed}); PSNR capped at "
            f"{PSNR_CAP:.0f} dB (an unchanged output); {torch.get_num_threads()} thread(s).",
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
