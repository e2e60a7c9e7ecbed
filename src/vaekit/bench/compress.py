"""``vaekit bench compress``: the learned codec against JPEG, WebP, AVIF and JPEG XL on real files.

Protocol (../shared/ANCHORS.md): bpp = 8 * file bytes / (H * W), header
included; PSNR on 8-bit RGB (peak 255), averaged per image; MS-SSIM on the
same pixels; BD-rate by PCHIP of log-rate over PSNR on the overlapping range.
Every codec reads the same decoded 8-bit images; times are in-process medians
over images with the thread count recorded.  Classical results are cached by
(codec, quality, library versions, image hash) so slow sweeps run once.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..baselines.compress import CODECS
from ..errors import VaekitError
from ..metrics import bd_rate, ms_ssim, psnr, rate_at
from .common import command_line, options, provenance, save_figure, write_results

ANCHOR_TOLERANCE_DB = 0.15
COMPRESSAI = {
    "bmshj2018-factorized": "compressai-bmshj2018-factorized_mse_cpu.json",
    "bmshj2018-hyperprior": "compressai-bmshj2018-hyperprior_mse_cpu.json",
    "mbt2018-mean": "compressai-mbt2018-mean_mse_cpu.json",
}


def _versions() -> dict:
    import imagecodecs
    import PIL

    return {"pillow": PIL.__version__, "imagecodecs": imagecodecs.__version__}


MS_SSIM_MIN_SIDE = 160  # five scales, each halving the image, under an 11-px window


def _quality_metrics(ref: np.ndarray, rec: np.ndarray) -> dict:
    a = torch.from_numpy(np.array(ref)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.array(rec)).permute(2, 0, 1)[None].float() / 255
    return {"psnr": float(psnr(a, b)[0]), "ms_ssim": float(ms_ssim(a, b)[0])}


def _measure(encode, decode, ref: np.ndarray) -> dict:
    t0 = time.perf_counter()
    data = encode()
    t1 = time.perf_counter()
    rec = decode(data)
    t2 = time.perf_counter()
    h, w = ref.shape[:2]
    return {
        "bytes": len(data),
        "bpp": 8 * len(data) / (h * w),
        **_quality_metrics(ref, rec),
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
    }


def _summarise(rows: list[dict]) -> dict:
    mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    return {
        "bpp": mean("bpp"),
        "psnr": mean("psnr"),
        "ms_ssim": mean("ms_ssim"),
        "encode_s_median": statistics.median(r["encode_s"] for r in rows),
        "decode_s_median": statistics.median(r["decode_s"] for r in rows),
    }


def _load_images(data_dir: Path, limit):
    """(set name, files, uint8 RGB images): a folder of lossless images, or the photos set's val rows
    (photos-val), area-downscaled by 2 so that their JPEG blocking does not favour JPEG."""
    from PIL import Image

    if (data_dir / "SPLITS.tsv").is_file():
        from .. import data as vd

        files = vd.split_by_file(vd.find_images(data_dir), data_dir / "SPLITS.tsv")[1][: limit or None]
        imgs = []
        for f in files:
            im = Image.open(f).convert("RGB")
            imgs.append(np.array(im.reduce(2)))  # box filter: the mean of each 2x2 block
        return "photos-val", files, imgs
    files = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in (".png", ".ppm", ".bmp", ".tif", ".tiff"))
    if not files:
        raise VaekitError(f"no lossless test images (png/ppm/bmp/tif) in {data_dir}")
    files = files[:limit] if limit else files
    imgs = [np.array(Image.open(f).convert("RGB")) for f in files]
    return data_dir.name, files, imgs


def run_classical(codec, imgs, names, cache_dir: Path | None, log=print) -> dict:
    versions = _versions()
    out = {}
    for q in CODECS[codec].qualities:
        rows = []
        for name, img in zip(names, imgs):
            key = hashlib.sha256(json.dumps([codec, q, versions]).encode() + img.tobytes()).hexdigest()[:32]
            path = cache_dir / f"{codec}-{key}.json" if cache_dir else None
            if path is not None and path.is_file():
                row = json.loads(path.read_text())
                row["cached"] = True
            else:
                row = _measure(lambda: CODECS[codec].encode(img, q), lambda d: CODECS[codec].decode(d), img)
                if path is not None:
                    from ..io import atomic_write_text

                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path, json.dumps(row))
            rows.append({"image": name, **row})
        out[q] = {"images": rows, **_summarise(rows)}
        log(f"  {codec} q{q}: {out[q]['bpp']:.3f} bpp, {out[q]['psnr']:.2f} dB")
    return out


def run_codec(model, imgs, names, log=print, effort: int = 0, qualities=None) -> dict:
    from ..tasks.compress import as_rgb_tensor, compress_info, decompress, pad_to_multiple

    model.eval()
    compress_info(imgs[0][:64, :64], 1, model=model)  # warm-up (tables, integer hyper-synthesis)
    out = {}
    for q in qualities or range(1, model.qualities + 1):
        rows = []
        for name, img in zip(names, imgs):
            info = {}

            def enc():
                data, inf = compress_info(img, q, effort=effort, model=model)
                info.update(inf)
                return data

            row = _measure(enc, lambda d: decompress(d, model=model), img)
            with torch.no_grad():  # what the training objective estimates for the same image
                x = pad_to_multiple(as_rgb_tensor(img)[0], model.pad_unit)
                est = float(model(x, quality=q - 1)["bpp"][0]) * x.shape[-2] * x.shape[-1]
            row.update(
                ideal_bits=info["ideal_bits"],
                payload_bits=info["payload_bits"],
                model_estimate_bits=est,
                file_bits=8 * row["bytes"],
            )
            rows.append({"image": name, **row})
        s = _summarise(rows)
        ideal = sum(r["ideal_bits"] for r in rows)
        s.update(
            ideal_bits=ideal,
            payload_bits=sum(r["payload_bits"] for r in rows),
            file_bits=sum(r["file_bits"] for r in rows),
            model_estimate_bits=sum(r["model_estimate_bits"] for r in rows),
        )
        s["coder_overhead_pct"] = 100 * (s["payload_bits"] / ideal - 1)
        s["file_overhead_pct"] = 100 * (s["file_bits"] / ideal - 1)
        s["estimate_vs_file_pct"] = 100 * (s["file_bits"] / s["model_estimate_bits"] - 1)
        out[q] = {"images": rows, **s}
        log(
            f"  vaekit effort {effort} q{q}: {s['bpp']:.3f} bpp, {s['psnr']:.2f} dB, "
            f"coder overhead {s['coder_overhead_pct']:+.3f}%"
        )
    return out


@torch.no_grad()
def vae_stats(model, imgs, samples: int = 8, crop: int = 256, seed: int = 0) -> dict:
    """The codec as a VAE, per quality: KL (= rate, bits/pixel), active latent channels
    (mean rate > 0.01 bit per element) and the spread of posterior samples (per-pixel std of
    g_s(y_hat + u), u ~ U(-1/2, 1/2) in the quantizer's units, on the 0-255 scale)."""
    from ..tasks.compress import as_rgb_tensor

    g = torch.Generator().manual_seed(seed)
    xs = []
    for img in imgs:
        x = as_rgb_tensor(img)[0]
        h, w = x.shape[-2:]
        c = min(crop, h, w) // 64 * 64
        xs.append(x[:, :, (h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c])
    x = torch.cat(xs) if len({t.shape for t in xs}) == 1 else xs[0]
    out = {}
    for q in range(model.qualities):
        o = model(x, quality=q)
        bits_y = -torch.log2(o["likelihoods"]["y"])  # (B, M, h, w)
        per_channel = bits_y.mean(dim=(0, 2, 3))
        y = model.g_a(x) * model.log_gain[q].exp()[None, :, None, None]
        mu = torch.zeros_like(y) if model.prior == "factorized" else model.hyper_mean(y)
        y_hat = torch.round(y - mu) + mu
        inv = model.log_inv_gain[q].exp()[None, :, None, None]
        draws = torch.stack(
            [model.g_s((y_hat + torch.rand(y_hat.shape, generator=g) - 0.5) * inv).clamp(0, 1) for _ in range(samples)]
        )
        out[q + 1] = {
            "kl_bpp": float(o["bpp"].mean()),
            "active_channels": int((per_channel > 0.01).sum()),
            "latent_channels": model.M,
            "sample_spread_255": float(draws.std(0).mean() * 255),
        }
    return out


def _effort_name(effort: int) -> str:
    return "vaekit" if effort == 0 else f"vaekit effort {effort}"


def _curve(results: dict):
    qs = sorted(results, key=lambda k: results[k]["bpp"])
    return [results[q]["bpp"] for q in qs], [results[q]["psnr"] for q in qs]


DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "data_dir": None,
    "model": "codec-hyperprior",
    "limit": None,
    "codecs": "jpeg,webp,avif,jxl",
    "efforts": "0",
    "qualities": None,
    "anchors": None,
    "cache": None,
    "output": "results",
}


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)

    from ..tasks.compress import EFFORT_STEPS, load_codec

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise VaekitError(f"--data-dir {data_dir} is not a folder")
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in codecs:
        if c not in CODECS:
            raise VaekitError(f"unknown codec {c!r} in --codecs; known: {', '.join(CODECS)}")
    try:
        efforts = sorted({0, *(int(e) for e in str(args.efforts).split(",") if e.strip())})
        qualities = [int(q) for q in str(args.qualities).split(",") if q.strip()] if args.qualities else None
    except ValueError:
        raise VaekitError("--efforts and --qualities take comma lists of integers") from None
    if efforts[-1] >= len(EFFORT_STEPS) or efforts[0] < 0:
        raise VaekitError(f"--efforts: each from 0 to {len(EFFORT_STEPS) - 1}")
    set_name, files, imgs = _load_images(data_dir, args.limit)
    small = [f for f, img in zip(files, imgs) if min(img.shape[:2]) <= MS_SSIM_MIN_SIDE]
    if small:  # a user's folder may hold thumbnails: measured without them
        if len(small) == len(files):
            raise VaekitError(
                f"every image under {data_dir} is {MS_SSIM_MIN_SIDE} px or less on a side as measured "
                f"(e.g. {small[0]}): the benchmark's MS-SSIM needs both sides over {MS_SSIM_MIN_SIDE} px"
            )
        warnings.warn(
            f"{len(small)} of {len(files)} images left out (e.g. {small[0]}): MS-SSIM needs both sides over "
            f"{MS_SSIM_MIN_SIDE} px",
            stacklevel=2,
        )
        files, imgs = zip(*[(f, img) for f, img in zip(files, imgs) if f not in small])
        files, imgs = list(files), list(imgs)
    names = [Path(f).name for f in files]
    out_dir = Path(args.output)
    cache = Path(args.cache) if args.cache else out_dir / ".cache" / "compress"
    anchors_dir = (
        Path(args.anchors) if args.anchors else Path(__file__).resolve().parents[2] / ".." / "shared" / "anchors"
    )
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    model = load_codec(args.model)
    if qualities and not all(1 <= q <= model.qualities for q in qualities):
        raise VaekitError(f"--qualities: each from 1 to {model.qualities}")
    log(f"vaekit codec ({args.model}) on {len(imgs)} images of {set_name}, {torch.get_num_threads()} thread(s)")
    results = {_effort_name(e): run_codec(model, imgs, names, log, e, qualities) for e in efforts}
    stats = vae_stats(model, imgs[:8])
    for c in codecs:
        results[c] = run_classical(c, imgs, names, cache, log)

    # 1. the classical numbers must reproduce the anchors first (full set only)
    checks = {}
    anchor_file = anchors_dir / "classic-codecs-kodak.json"
    if set_name == "kodak" and not args.limit and anchor_file.is_file():
        anchor = json.loads(anchor_file.read_text())["codecs"]
        for c in codecs:
            ref = anchor.get(c, {}).get("results")
            if not ref:
                continue
            diffs = [abs(results[c][q]["psnr"] - p) for q, p in zip(ref["quality"], ref["psnr-rgb"]) if q in results[c]]
            bdiffs = [
                abs(results[c][q]["bpp"] / b - 1) * 100 for q, b in zip(ref["quality"], ref["bpp"]) if q in results[c]
            ]
            checks[c] = {
                "max_abs_psnr_diff_db": max(diffs),
                "max_rel_bpp_diff_pct": max(bdiffs),
                "tolerance_db": ANCHOR_TOLERANCE_DB,
                "reproduced": max(diffs) <= ANCHOR_TOLERANCE_DB,
            }
    # 2. BD-rates, vs JPEG, WebP and AVIF (measured here), and for CompressAI's published curves
    curves = {name: _curve(r) for name, r in results.items()}
    published = {}
    for label, fname in COMPRESSAI.items():
        f = anchors_dir / "compressai-kodak" / fname
        if f.is_file() and set_name == "kodak":
            r = json.loads(f.read_text())["results"]
            published[f"compressai {label}"] = (r["bpp"], r["psnr-rgb"])
    bd = {}
    for name, (rate, ps) in {**curves, **published}.items():
        row = {}
        for ref in ("jpeg", "webp", "avif") + (("vaekit",) if name.startswith("vaekit effort") else ()):
            if ref in curves and ref != name:
                v, rng = bd_rate(*curves[ref], rate, ps)
                row[f"vs_{ref}"] = v
                row[f"vs_{ref}_psnr_range"] = rng
        bd[name] = row

    card = getattr(model, "card", {}) or {}
    command = command_line(args)
    payload = {
        "task": "compress",
        "set": set_name,
        "n_images": len(imgs),
        "command": command,
        "provenance": provenance({"none": "deterministic"}, card.get("sha256")),
        "model": {
            "spec": args.model,
            "arch": getattr(model, "arch", None),
            "weights_id": model.weights_id().hex(),
            "lambdas": list(model.lambdas),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "codec_versions": _versions(),
        "anchor_checks": checks,
        "bd_rate": bd,
        "efforts": {str(e): {"steps": EFFORT_STEPS[e]} for e in efforts},
        "vae_stats": stats,
        "results": {name: {str(q): v for q, v in r.items()} for name, r in results.items()},
    }
    stem = f"compress-{set_name}"
    write_results(out_dir, stem, payload, _markdown(payload, results, bd, checks))
    _plot(out_dir / f"{stem}.png", curves, published, set_name)
    log(f"wrote {out_dir / stem}.json, .md and .png\nreproduce with: {command}")
    return payload


def _markdown(payload, results, bd, checks) -> str:
    p = payload["provenance"]
    lines = [
        f"# Compression on {payload['set']} ({payload['n_images']} images)",
        "",
        f"`{payload['command']}` — {p['cpu']}, {p['threads']} thread(s), vaekit {p['vaekit']} ({p['git_sha']}).",
        "bpp from the real file size (header included); PSNR on 8-bit RGB, mean per image; times are medians "
        "per image, in-process.",
        "",
        "## vaekit codec per quality",
        "",
        "bits vs X: the file against the bits X needs for the same PSNR (X's curve interpolated as for the "
        "BD-rate; — outside its range).",
        "",
    ]
    names = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
    refs = {r: _curve(results[r]) for r in names if r in results}
    lines += [
        "| quality | bpp | PSNR dB | MS-SSIM | "
        + "".join(f"bits vs {names[r]} | " for r in refs)
        + "encode s | decode s | ideal bits | payload bits | coder overhead | file vs ideal | file vs model estimate |",
        "|---" * (11 + len(refs)) + "|",
    ]
    for q, r in sorted(results["vaekit"].items()):
        vs = [rate_at(*curve, r["psnr"]) for curve in refs.values()]
        lines.append(
            f"| {q} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} | "
            + "".join("— | " if v is None else f"{(r['bpp'] / v - 1) * 100:+.1f}% | " for v in vs)
            + f"{r['encode_s_median']:.3f} | {r['decode_s_median']:.3f} | {r['ideal_bits']:.0f} | "
            f"{r['payload_bits']:.0f} | {r['coder_overhead_pct']:+.3f}% | {r['file_overhead_pct']:+.3f}% | "
            f"{r['estimate_vs_file_pct']:+.2f}% |"
        )
    lines += [
        "",
        "## BD-rate (negative = fewer bits for the same PSNR)",
        "",
        "| codec | vs JPEG | PSNR range (dB) | vs WebP | PSNR range (dB) | vs AVIF | PSNR range (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "—" if v is None else f"{v:+.1f}%"  # noqa: E731
    rng = lambda v: "—" if not v else f"{v[0]:.1f}–{v[1]:.1f}"  # noqa: E731
    for name, row in bd.items():
        if name.startswith("vaekit effort"):
            continue  # their own table below
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{fmt(row.get(f'vs_{r}'))} | {rng(row.get(f'vs_{r}_psnr_range'))}" for r in ("jpeg", "webp", "avif")
            )
            + " |"
        )
    searched = [n for n in results if n.startswith("vaekit effort")]
    if searched:
        lines += [
            "",
            "## Encode effort (the same decoder; the encoder searches each image's latents)",
            "",
            "| effort | search steps | BD-rate vs effort 0 | PSNR range (dB) | vs WebP | encode s | decode s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ["vaekit", *searched]:
            e = "0" if name == "vaekit" else name.rsplit(" ", 1)[1]
            med = lambda k: statistics.median(r[k] for v in results[name].values() for r in v["images"])  # noqa: E731
            lines.append(
                f"| {e} | {payload['efforts'][e]['steps']} | {fmt(bd[name].get('vs_vaekit', 0.0))} | "
                f"{rng(bd[name].get('vs_vaekit_psnr_range'))} | {fmt(bd[name].get('vs_webp'))} | "
                f"{med('encode_s'):.2f} | {med('decode_s'):.2f} |"
            )
    if checks:
        lines += [
            "",
            "## Classical codecs against ../shared/anchors/classic-codecs-kodak.json",
            "",
            "| codec | max abs PSNR diff (dB) | max bpp diff | reproduced (≤ 0.15 dB) |",
            "|---|---|---|---|",
        ]
        for c, v in checks.items():
            lines.append(
                f"| {c} | {v['max_abs_psnr_diff_db']:.3f} | {v['max_rel_bpp_diff_pct']:.2f}% | "
                f"{'yes' if v['reproduced'] else 'NO'} |"
            )
    lines += [
        "",
        "## Classical sweeps",
        "",
        "| codec | quality | bpp | PSNR dB | MS-SSIM | encode s | decode s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name.startswith("vaekit"):
            continue
        for q, v in sorted(r.items()):
            lines.append(
                f"| {name} | {q} | {v['bpp']:.4f} | {v['psnr']:.2f} | {v['ms_ssim']:.4f} | "
                f"{v['encode_s_median']:.4f} | {v['decode_s_median']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def _plot(path: Path, curves: dict, published: dict, set_name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for name, (r, p) in curves.items():
        ours = name.startswith("vaekit")
        ax.plot(r, p, "o-" if ours else ".-", label=name, lw=2.5 if ours else 1.2, ms=4)
    for name, (r, p) in published.items():
        ax.plot(r, p, "--", label=f"{name} (published)", lw=1)
    ax.set_xlim(0, 2.0)
    ax.set_ylim(24, 42)
    ax.set_xlabel("bits per pixel (real files)")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_title(f"Rate–distortion on {set_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
