"""``vaekit bench inpaint``: the VAE inpainters against the classical ones, in one run.

Every method reads the same image and the same mask (seeded by set, image index and mask
kind; the mask's sha256 is recorded, with its hole fraction).  Estimates are clipped and
rounded to uint8; PSNR is computed against the uint8 image inside the hole (all channels
of the missing pixels) and over the whole image; SSIM (Gaussian window, sigma 1.5) is
averaged over the hole pixels of the SSIM map, and over the whole image.  Known pixels are
kept by every method (asserted).  One thread for every method, in-process, models loaded
before the clock starts; median seconds per image.

The rows ``vae-x2``/``vae-x4``/``vae-x8`` are the one-pass estimate averaged over 2/4/8 flipped and
quarter-turned copies (the self-ensemble of :func:`vaekit.tasks.inpaint.vae_inpaint`).

For the sampling row ``vae-8`` (eight posterior fills, the estimate is their mean) the
mean fill's figures are the row's, and ``sample_hole_psnr`` (mean over fills of the hole
PSNR of each) and ``pairwise_hole_rmse`` (mean RMSE between two fills inside the hole,
0-255 scale) say how good and how different the individual fills are.

Results are cached under ``results/.cache/inpaint.jsonl`` keyed by (method, model weights,
set, image, mask sha), so an interrupted run resumes; ``--fresh`` recomputes.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ..baselines import BASELINES
from ..errors import VaekitError
from ..metrics import hole_psnr, ssim_pair, to_u8
from .common import (
    Cache,
    command_line,
    load_set,
    options,
    parse_sets,
    picture_row,
    provenance,
    single_threaded,
    write_results,
)

SETS = ("cbsd68", "kodak", "bsd68", "mnist")  # bsd68 (gray): the classical anchors of ../shared/ANCHORS.md
# (first 10); mnist: the first 500 test digits, repaired by a generative VAE (mnist-vae) by latent inpainting
MASKS = ("box", "pixels0.5", "pixels0.8", "strokes-thin", "strokes-medium", "strokes-thick")
VAE_METHODS = ("vae", "vae-x2", "vae-x4", "vae-x8", "vae-8")  # vae-xN: one pass, self-ensemble of N; vae-8: 8 fills
DEFAULT_VAE = ("vae", "vae-x4", "vae-8")
CLASSICAL = tuple(BASELINES["inpaint"])  # harmonic: the inpaint-vae's own pre-fill, exact


def _seed(set_name: str, index: int, kind: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{set_name}/{index}/{kind}".encode()).digest()[:4], "little")


def measure(est, clean, mask) -> dict:
    e, c = to_u8(est), to_u8(clean)
    keep = ~mask
    if not np.array_equal(e[keep], c[keep]):
        raise AssertionError("a method altered known pixels")
    sh, sw = ssim_pair(e, c, mask)
    whole = float(np.mean((e.astype(np.float64) - c) ** 2))
    return {
        "hole_psnr": hole_psnr(e, c, mask),
        "psnr": float(10 * np.log10(255.0**2 / max(whole, 1e-10))),
        "hole_ssim": sh,
        "ssim": sw,
    }


DEFAULTS = {
    "quiet": False,
    "threads": 1,
    "argv": (),
    "data_root": None,
    "sets": "cbsd68",
    "masks": "box,pixels0.5,pixels0.8,strokes-thin,strokes-medium,strokes-thick",
    "methods": None,
    "model": None,
    "samples_limit": None,
    "limit": None,
    "fresh": False,
    "output": "results",
}


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)
    from ..tasks.inpaint import inpaint, load_inpainter, pairwise_distance

    single_threaded(args.threads)
    from .. import degrade

    root = Path(args.data_root)
    sets = parse_sets(args.sets, SETS)
    masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    for k in masks:
        degrade.make_mask(k, (16, 16), 0)  # validates the name
    all_methods = [m.strip() for m in args.methods.split(",")] if args.methods else [*DEFAULT_VAE, *CLASSICAL]
    for m in all_methods:
        if m not in VAE_METHODS + CLASSICAL:
            raise VaekitError(f"unknown method {m!r}; known: {', '.join(VAE_METHODS + CLASSICAL)}")
    if args.methods and "mnist" in sets and any("-x" in m for m in all_methods):
        raise VaekitError("the vae-xN rows (self-ensembles) are for the inpaint-vae, not MNIST's generative VAE")
    out_dir = Path(args.output)
    cache = Cache(out_dir / ".cache" / "inpaint.jsonl")
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    command = command_line(args)
    payloads = {}
    for set_name in sets:
        methods = [m for m in all_methods if not (set_name == "mnist" and "-x" in m)]
        model = None
        if any(m in VAE_METHODS for m in methods):  # MNIST: a generative VAE, by latent inpainting
            model = load_inpainter(args.model or ("mnist-vae" if set_name == "mnist" else None))
        card = getattr(model, "card", {}) or {}
        model_sha = card.get("sha256") or (
            hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
            if model is not None
            else None
        )
        if set_name == "mnist":
            from ..data import mnist_tensors

            x, _ = mnist_tensors(root / "mnist", "test")
            n = args.limit or 500
            images = [(f"test{i:05d}", x[i, 0].double().numpy()) for i in range(min(n, x.shape[0]))]
        else:
            images = load_set(root / set_name, "L" if set_name == "bsd68" else "RGB")
            if args.limit:
                images = images[: args.limit]
        rows = []
        for kind in masks:
            for i, (name, clean) in enumerate(images):
                seed = _seed(set_name, i, kind)
                mask = degrade.make_mask(kind, clean.shape, seed)
                msha = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]
                row = {
                    "image": name,
                    "mask": kind,
                    "mask_seed": seed,
                    "mask_sha256": msha,
                    "hole_fraction": float(mask.mean()),
                }
                pics = {"clean": clean, "input": np.where(mask if clean.ndim == 2 else mask[..., None], 1.0, clean)}
                for m in methods:
                    if m == "vae-8" and args.samples_limit is not None and i >= args.samples_limit:
                        continue  # the sampling row on the first images only (it costs 8 fills each)
                    key = json.dumps([m, model_sha if m in VAE_METHODS else None, set_name, name, msha])
                    hit = None if args.fresh else cache.get(key)
                    if hit is not None and not (i == 0 and kind == masks[0]):
                        row[m] = {**hit, "cached": True}
                        continue
                    t0 = time.perf_counter()
                    if m in VAE_METHODS:
                        ens = int(m.split("-x")[1]) if "-x" in m else 1
                        r = inpaint(
                            clean, mask, 8 if m == "vae-8" else 1, model=model, seed=seed, details=True, ensemble=ens
                        )
                    else:
                        r = inpaint(clean, mask, method=m, details=True)
                    dt = time.perf_counter() - t0
                    res = {**measure(r.image, clean, mask), "seconds": dt}
                    if r.samples:
                        cu = to_u8(clean)
                        res["sample_hole_psnr"] = statistics.mean(hole_psnr(to_u8(s), cu, mask) for s in r.samples)
                        res["pairwise_hole_rmse"] = 255.0 * pairwise_distance(r.samples, mask)
                    row[m] = res
                    pics[m] = r.image
                    cache.put(key, res)
                rows.append(row)
                log(
                    f"  {set_name} {kind} {name}: "
                    + ", ".join(f"{m} {row[m]['hole_psnr']:.2f}" for m in methods if m in row)
                )
                if i == 0 and kind == masks[0]:
                    _picture(out_dir / f"inpaint-{set_name}.png", pics, methods, row, kind)
        summary = {}
        for kind in masks:
            rs = [r for r in rows if r["mask"] == kind]
            s = {"hole_fraction": statistics.mean(r["hole_fraction"] for r in rs)}
            for m in methods:
                vals = [r[m] for r in rs if m in r]
                s[m] = {k: statistics.mean(v[k] for v in vals) for k in ("hole_psnr", "psnr", "hole_ssim", "ssim")}
                s[m]["seconds_median"] = statistics.median(v["seconds"] for v in vals)
                s[m]["n_images"] = len(vals)
                for k in ("sample_hole_psnr", "pairwise_hole_rmse"):
                    if all(k in v for v in vals):
                        s[m][k] = statistics.mean(v[k] for v in vals)
            cl = [m for m in methods if m in CLASSICAL]
            if cl:
                best = max(cl, key=lambda m: s[m]["hole_psnr"])
                s["best_classical"] = best
                for m in methods:
                    if m in VAE_METHODS:  # on the images the row has (vae-8 may cover fewer)
                        sub = [r for r in rs if m in r]
                        s[m]["margin_over_best_classical"] = s[m]["hole_psnr"] - statistics.mean(
                            r[best]["hole_psnr"] for r in sub
                        )
            summary[kind] = s
        payload = {
            "task": "inpaint",
            "set": set_name,
            "n_images": len(images),
            "command": command,
            "protocol": "masks seeded by (set, image index, mask kind), shared by every method and by "
            "the colour channels; estimate rounded to uint8; hole PSNR over the missing "
            "pixels' RGB values, whole-image PSNR over all; SSIM map (Gaussian window 1.5) "
            "averaged in the hole and over the image; one thread, in-process, models loaded; "
            "vae = one pass (prior means), vae-xN = one pass averaged over N flipped/turned "
            "copies, vae-8 = mean of 8 posterior fills",
            "threads": args.threads,
            "model": {"name": card.get("name"), "sha256": model_sha},
            "mask_widths": {
                "strokes": dict(degrade.STROKE_WIDTHS),
                "stroke_targets": dict(degrade.STROKE_TARGETS),
                "box": "centred h/2 x w/2",
            },
            "provenance": provenance({"mask": "sha256(set/index/kind)[:4]"}),
            "summary": summary,
            "per_image": rows,
        }
        table = _table(set_name, summary, methods, masks, command)
        write_results(out_dir, f"inpaint-{set_name}", payload, table)
        payloads[set_name] = payload
        log(table)
    print(f"reproduce with: {command}")
    return payloads


def _table(set_name, summary, methods, masks, command) -> str:
    lines = [
        f"**{set_name}** -- inside the hole: PSNR dB / SSIM (whole image in the second table)",
        "",
        "| method | " + " | ".join(masks) + " |",
        "|---|" + "---|" * len(masks),
    ]
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(f"{summary[k][m]['hole_psnr']:.2f} / {summary[k][m]['hole_ssim']:.3f}" for k in masks)
            + " |"
        )
    lines.append("| (hole fraction) | " + " | ".join(f"{100 * summary[k]['hole_fraction']:.1f}%" for k in masks) + " |")
    if any(m in VAE_METHODS for m in methods) and "best_classical" in summary[masks[0]]:
        for m in (m for m in methods if m in VAE_METHODS):
            lines.append(
                f"| {m} − best classical | "
                + " | ".join(
                    f"{summary[k][m]['margin_over_best_classical']:+.2f} ({summary[k]['best_classical']})"
                    for k in masks
                )
                + " |"
            )
    if "vae-8" in methods:
        n8 = summary[masks[0]]["vae-8"]["n_images"]
        if n8 != summary[masks[0]][methods[-1]]["n_images"]:
            lines.append(
                f"| (vae-8 rows: the first {n8} images; its margin is over the best classical on those) |"
                + " |" * len(masks)
            )
        lines.append(
            "| vae-8: per-fill hole PSNR / pairwise RMSE (0–255) | "
            + " | ".join(
                f"{summary[k]['vae-8']['sample_hole_psnr']:.2f} / {summary[k]['vae-8']['pairwise_hole_rmse']:.1f}"
                for k in masks
            )
            + " |"
        )
    lines += [
        "",
        f"**{set_name}** -- whole image: PSNR dB / SSIM / median s per image (one thread)",
        "",
        "| method | " + " | ".join(masks) + " |",
        "|---|" + "---|" * len(masks),
    ]
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(
                f"{summary[k][m]['psnr']:.2f} / {summary[k][m]['ssim']:.3f} / {summary[k][m]['seconds_median']:.2f}"
                for k in masks
            )
            + " |"
        )
    lines += ["", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def _picture(path: Path, pics: dict, methods, row, kind) -> None:
    """The first image with its first mask across methods, hole PSNR under each."""
    names = ["clean", "input"] + [m for m in methods if m in pics]
    picture_row(
        path,
        [
            (
                n
                + ("" if n == "clean" else f"\n{kind}" if n == "input" else f"\n{row[n]['hole_psnr']:.2f} dB in hole"),
                pics[n],
            )
            for n in names
        ],
        width=2.6,
        dpi=100,
    )
