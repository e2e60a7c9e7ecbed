"""``vaekit bench denoise``: VAE denoisers against the classical ones, in one run.

Protocol (DnCNN/FFDNet, ../shared/ANCHORS.md): clean image in [0, 1] (from
its 8-bit file); Gaussian noise N(0, (sigma/255)^2) added and not clipped;
the estimate is clipped and rounded to uint8; PSNR and SSIM against the uint8
image, no border crop; colour PSNR over all RGB values.  Every method reads
the same noisy array (seeded by set, image index and condition; its sha256 is
recorded) and gets the same side information: the true sigma (Poisson: the
peak; salt-and-pepper: nothing).  The blind rows (``vae-blind``) estimate
sigma instead, and say so.  One thread for every method, in-process, models
loaded before the clock starts; PSNR and time come from the same call.

Classical results are cached under ``results/.cache/`` keyed by (method, its
parameters, noisy-input hash), so BM3D runs once per input.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import numpy as np

from .. import baselines as B
from ..baselines import BASELINES
from ..baselines import denoise as D
from ..degrade import add_noise, camera, check_amount, check_peak, estimate_sigma
from ..errors import VaekitError
from ..metrics import psnr_u8, ssim_u8
from .common import (
    Cache,
    command_line,
    load_set,
    options,
    parse_sets,
    picture_row,
    provenance,
    read_results,
    set_is_gray,
    single_threaded,
    write_results,
)

GRAY_SETS = ("set12", "bsd68", "photos-val-gray")  # photos-val-gray: for choosing gray models
COLOR_SETS = ("cbsd68", "mcmaster", "kodak", "photos-val")
REAL_SETS = ("realnoise-cc15",)  # real noisy/clean pairs: every method blind
VAE_METHODS = ("vae", "vae-8", "vae-blind", "vae-selfsup", "vae-divnoising")
# self-supervised rows: the method each fits (None: r2r for Gaussian noise, divnoising for Poisson)
SELFSUP = {"vae-selfsup": None, "vae-divnoising": "divnoising"}
CLASSICAL = tuple(BASELINES["denoise"])
BLIND_NOISES = ("real", "camera")  # conditions where no method is told the level


def parse_conditions(sigmas: str, extra: str) -> list[dict]:
    """``--sigmas 15,25,50,25c`` and ``--noises poisson30,sp0.1`` -> condition dicts.  A ``c`` after a level is
    the clipped 8-bit protocol: the noisy image is clipped to [0, 1] and rounded to 8 bits, as a file holds it."""
    conds = []
    for s in [s.strip() for s in sigmas.split(",") if s.strip()]:
        clipped = s.endswith("c")
        try:
            v = float(s[:-1] if clipped else s)
        except ValueError:
            raise VaekitError(f"--sigmas takes levels such as 25 or 25c (clipped 8-bit), not {s!r}") from None
        if not 0 < v <= 255:
            raise VaekitError(f"sigma must lie in (0, 255], not {s}")
        tag = f"sigma{v:g}" + ("-clipped" if clipped else "")
        conds.append({"noise": "gaussian", "sigma": v, "tag": tag, **({"clipped": True} if clipped else {})})
    for e in [e.strip() for e in extra.split(",") if e.strip()]:
        if e.startswith(("poisson", "sp")):
            poisson = e.startswith("poisson")
            text = e[7:] if poisson else e[2:]
            try:
                v = float(text) if text else (30.0 if poisson else 0.1)
            except ValueError:
                raise VaekitError(f"--noises {e!r}: give a number, e.g. poisson30 or sp0.1") from None
            if poisson:
                conds.append({"noise": "poisson", "peak": check_peak(v), "tag": e})
            else:
                conds.append({"noise": "salt-pepper", "amount": check_amount(v), "tag": e})
        elif e == "camera":  # simulated camera files (vaekit.degrade.camera): every method blind, as on real noise
            conds.append({"noise": "camera", "tag": e})
        else:
            raise VaekitError(
                f"unknown extra noise {e!r}: use poissonPEAK, spAMOUNT or camera (e.g. poisson30, sp0.1, camera)"
            )
    return conds


def _seed(set_name: str, index: int, cond: dict) -> int:
    h = hashlib.sha256(f"{set_name}/{index}/{cond['tag']}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _params(method: str) -> dict:

    return {
        "nlm": {"h": D.NLM_H, "patch": D.NLM_PATCH, "dist": D.NLM_DIST},
        "opencv-nlm": {"h": D.CV_NLM_H},
        "tv": {"w": D.TV_WEIGHT},
        "gaussian": {"px": D.GAUSS_PX},
        "bm3d": {"profile": "np"},
        "wavelet": {"BayesShrink": "soft"},
        "median": {"size": 3},
    }.get(method, {})


def load_pairs(path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, clean, noisy) for each ``*_real.png`` / ``*_mean.png`` pair (realnoise-cc15)."""
    from PIL import Image

    d = Path(path)
    pairs = []
    for f in sorted(d.glob("*_real.png")):
        ref = f.with_name(f.name.replace("_real.png", "_mean.png"))
        if ref.is_file():
            load = lambda p: np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0  # noqa: E731
            pairs.append((f.name.replace("_real.png", ""), load(ref), load(f)))
    if not pairs:
        raise VaekitError(f"no *_real.png / *_mean.png pairs in {d}")
    return pairs


def load_photos_val(root, gray: bool = False) -> list[tuple[str, np.ndarray]]:
    """photos-val: the ``val`` rows of ``photos/SPLITS.tsv``, as read from their JPEG files; ``gray``: their
    8-bit luma (Pillow's ``L``, as gray training reads the train split)."""
    from PIL import Image

    from .. import data as vd
    from ..io import read_array

    root = Path(root)
    _, val = vd.split_by_file(vd.find_images(root), root / "SPLITS.tsv")
    out = []
    for f in val:
        x = np.asarray(read_array(f), dtype=np.float64)
        if gray:
            x = np.asarray(Image.fromarray(np.round(x * 255).astype(np.uint8)).convert("L"), np.float64) / 255
        out.append((Path(f).name, x))
    return out


def _run(method, y, cond, models, seed):
    """(estimate, sigma used) for one method on one noisy input."""
    from ..tasks import denoise as T

    side = {"sigma": cond.get("sigma"), "peak": cond.get("peak")}
    if cond["noise"] in BLIND_NOISES:  # blind for everyone: the VAE estimates; classical ones get the same estimate
        if method.startswith("vae"):
            side["sigma"] = None
        else:
            side["sigma"] = cond["sigma_by_image"][seed]
        cond = {**cond, "noise": "gaussian"}
    if method in SELFSUP:
        return T.vae_denoise(models[method], y, None, seed=seed)[0], None
    if method.startswith("vae"):
        model = models["gray" if y.ndim == 2 else "color"]
        k = 8 if method == "vae-8" else 0
        if method == "vae-blind":
            side["sigma"] = None

        def fn(a, s, camera=False):
            return T.vae_estimate(model, a, s, samples=k, seed=seed, camera=camera)[0]

        cam = getattr(model, "camera_input", False)
    else:
        cam = False
        if cond["noise"] == "salt-pepper" and method == "median":
            return D.median(y), None
        fn = B.get("denoise", method)
    level_map = method.startswith("vae")  # blind VAE rows read a per-pixel level, as ``vaekit denoise`` does
    est, sigma, _ = T.for_noise(
        fn, y, cond["noise"], sigma=side["sigma"], peak=side["peak"], level_map=level_map, camera=cam
    )
    return est, sigma


DEFAULTS = {
    "quiet": False,
    "threads": 1,
    "argv": (),
    "data_root": None,
    "sets": "bsd68",
    "sigmas": "15,25,50",
    "noises": "",
    "methods": None,
    "model_gray": None,
    "model_color": None,
    "limit": None,
    "fresh": False,
    "fresh_file": False,
    "output": "results",
}


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/ and returns the payload."""
    args = options(kwargs, DEFAULTS)
    from ..tasks.denoise import load_denoiser

    single_threaded(args.threads)
    root = Path(args.data_root)
    sets = parse_sets(args.sets, GRAY_SETS + COLOR_SETS + REAL_SETS, root)
    gray = {s: s in GRAY_SETS or (s not in COLOR_SETS + REAL_SETS and set_is_gray(root / s)) for s in sets}
    conds = parse_conditions(args.sigmas, args.noises)
    methods = (
        [m.strip() for m in args.methods.split(",")]
        if args.methods
        else ["vae", "vae-8", "vae-blind", *[m for m in CLASSICAL if m in B.available("denoise")]]
    )  # vae-selfsup: ask for it
    for m in methods:
        if m not in VAE_METHODS + CLASSICAL:
            raise VaekitError(f"unknown method {m!r}; known: {', '.join(VAE_METHODS + CLASSICAL)}")
        if m == "bm3d" and "bm3d" not in B.available("denoise"):
            raise VaekitError("bm3d is not installed: pip install 'vaekit[bm3d]' (non-commercial licence)")
    models = {}
    if any(m in ("vae", "vae-8", "vae-blind") for m in methods):
        if any(gray.values()):
            models["gray"] = load_denoiser(args.model_gray, 1)
        if not all(gray.values()):
            models["color"] = load_denoiser(args.model_color, 3)
    out_dir = Path(args.output)
    cache = Cache(out_dir / ".cache" / "denoise.jsonl")
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    command = command_line(args)
    payloads = {}
    for set_name in sets:
        mode = "L" if gray[set_name] else "RGB"
        real = None
        if set_name in REAL_SETS:
            pairs = load_pairs(root / set_name)[: args.limit or None]
            images, real = [(n, c) for n, c, _ in pairs], [y for _, _, y in pairs]
        elif set_name in ("photos-val", "photos-val-gray"):
            images = load_photos_val(root / "photos", gray=set_name in GRAY_SETS)[: args.limit or None]
        else:
            images = load_set(root / set_name, mode)[: args.limit or None]
        rows = []
        fits = {}
        for ci, cond in enumerate([{"noise": "real", "tag": "real"}] if real else conds):
            seeds = [_seed(set_name, i, cond) for i in range(len(images))]
            blind = cond["noise"] in BLIND_NOISES
            if real:
                noisy = real
            elif cond["noise"] == "camera":
                noisy = [camera(clean, seed) for (_, clean), seed in zip(images, seeds)]
            else:
                noisy = [
                    add_noise(
                        clean,
                        cond["noise"],
                        sigma=cond.get("sigma"),
                        peak=cond.get("peak"),
                        amount=cond.get("amount"),
                        seed=seed,
                    )
                    for (_, clean), seed in zip(images, seeds)
                ]
                if cond.get("clipped"):
                    noisy = [np.round(np.clip(y, 0, 1) * 255) / 255 for y in noisy]
            if blind:  # the level every method gets, as ``vaekit denoise`` estimates it
                cond["sigma_by_image"] = {sd: estimate_sigma(y) for sd, y in zip(seeds, noisy)}
            for m in SELFSUP:
                if m in methods and cond["noise"] != "salt-pepper":
                    models[m], fits[f"{cond['tag']}/{m}"] = _fit_selfsup(
                        out_dir, set_name, cond, images, noisy, args, SELFSUP[m]
                    )
            for i, (name, clean) in enumerate(images):
                seed, y = seeds[i], noisy[i]
                sha = hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()
                row = {
                    "image": name,
                    "condition": cond["tag"],
                    "noise_seed": seed,
                    "noisy_sha256": sha[:16],
                    "noisy": {"psnr": psnr_u8(y, clean)},
                }
                pics = {"clean": clean, "noisy": y}
                for m in methods:
                    if m == "median" and cond["noise"] != "salt-pepper":
                        continue  # the median filter is the salt-and-pepper baseline only
                    if m in SELFSUP and cond["noise"] == "salt-pepper":
                        continue  # no noise model to fit
                    side = {c: v for c, v in cond.items() if c != "sigma_by_image"}
                    if blind:  # the level the classical methods are given is part of what they computed
                        side["sigma"] = cond["sigma_by_image"][seed]
                    k = Cache.key(m, side, sha, _params(m))
                    hit = None if m.startswith("vae") or args.fresh else cache.get(k)
                    if hit is not None and not (ci == 0 and i == 0):
                        row[m] = {**hit, "cached": True}  # PSNR and time of the run that computed it
                        continue
                    t0 = time.perf_counter()
                    est, s_used = _run(m, y, cond, models, seed)
                    dt = time.perf_counter() - t0
                    res = {"psnr": psnr_u8(est, clean), "ssim": ssim_u8(est, clean), "seconds": dt}
                    if m == "vae-blind" or blind:
                        res["sigma_estimated" if m.startswith("vae") else "sigma_given"] = s_used
                    row[m] = res
                    pics[m] = est
                    if not m.startswith("vae"):
                        cache.put(k, res)
                rows.append(row)
                log(
                    f"  {set_name} {cond['tag']} {name}: "
                    + ", ".join(f"{m} {row[m]['psnr']:.2f}" for m in methods if m in row)
                )
                pic = out_dir / f"denoise-{set_name}.png"
                if ci == 0 and i == 0 and ("vae" in methods or not pic.is_file()):  # a run of a few rows keeps
                    _picture(pic, pics, methods, row)  # the full picture
        prov = provenance({"noise": "sha256(set/index/condition)[:4]"})
        runs = [
            {
                "command": command,
                "cpu": prov["cpu"],  # seconds compare only within a run: merged runs may come from other machines
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "methods": methods,
                "conditions": [c["tag"] for c in conds],
                "bm3d_threads": args.threads,  # earlier runs let the bm3d package use every core
            }
        ]
        for m in SELFSUP:
            models.pop(m, None)
        model_info = {
            k: {"name": getattr(v, "card", {}).get("name"), "sha256": getattr(v, "card", {}).get("sha256")}
            for k, v in models.items()
        }
        prev = out_dir / f"denoise-{set_name}.json"
        if not args.fresh_file and prev.is_file():  # merge: earlier runs' other conditions and methods stay
            rows, runs, fits, model_info = _merge(read_results(prev), rows, runs, fits, model_info, len(images))
        for r in rows:
            for m, v in r.items():
                if isinstance(v, dict) and "psnr" in v and m != "noisy":
                    v.setdefault("run", len(runs) - 1)
        all_methods = [m for m in (*VAE_METHODS, *CLASSICAL) if any(m in r for r in rows)]
        tags = list(dict.fromkeys(r["condition"] for r in rows))
        summary = {}
        for tag in tags:
            rs = [r for r in rows if r["condition"] == tag]
            summary[tag] = {"noisy": {"psnr": statistics.mean(r["noisy"]["psnr"] for r in rs)}}
            summary[tag].update(
                {
                    m: {
                        "psnr": statistics.mean(r[m]["psnr"] for r in rs),
                        "ssim": statistics.mean(r[m]["ssim"] for r in rs),
                        "seconds_median": statistics.median(r[m]["seconds"] for r in rs),
                        "runs": sorted({r[m]["run"] for r in rs}),
                    }
                    for m in all_methods
                    if all(m in r for r in rs)
                }
            )
            if tag.startswith("sigma") and all("vae-blind" in r for r in rs):
                err = [r["vae-blind"]["sigma_estimated"] - float(tag[5:].split("-")[0]) for r in rs]
                summary[tag]["sigma_estimator"] = {
                    "mean_error": statistics.mean(err),
                    "mean_abs_error": statistics.mean(abs(e) for e in err),
                }
        payload = {
            "task": "denoise",
            "set": set_name,
            "n_images": len(images),
            "mode": mode,  # L: measured in gray, RGB: in colour
            "command": command,
            "protocol": (
                "real camera noise (realnoise-cc15): the noisy JPEG-pipeline shot against the mean of ~500 shots; "
                "every method blind at the level vaekit.degrade.estimate_sigma gives (the wavelet MAD, raised for "
                "spatially correlated noise; sigma_given per image: the level a user would otherwise have to guess)"
                if real
                else "DnCNN: clean [0,1] + N(0,(sigma/255)^2), not clipped (conditions ending -clipped: clipped to "
                "[0,1] and rounded to 8 bits, as files hold noise); estimate clipped and rounded to uint8; "
                "PSNR/SSIM vs the uint8 image, no border crop; colour PSNR over RGB; every method gets the true "
                "sigma (Poisson: the peak) except vae-blind, which estimates it (vaekit.degrade.estimate_sigma); "
                "camera: vaekit.degrade.camera files (Bayer-mosaic Poisson-Gaussian noise, demosaicked, JPEG), "
                "every method blind at the level estimate_sigma gives"
            )
            + "; blind VAE rows spread the level over the image by brightness (vaekit.degrade.level_shape)"
            + "; one thread, in-process, models loaded; vae = one pass (prior mean), vae-8 = mean of 8 draws",
            "threads": args.threads,
            "models": model_info,
            "selfsup_fits": fits,
            "runs": runs,
            "baseline_params": {m: _params(m) for m in all_methods if not m.startswith("vae")},
            "provenance": prov,
            "summary": summary,
            "per_image": rows,
        }
        table = _table(set_name, summary, all_methods, [(r["command"], r.get("cpu")) for r in runs])
        write_results(out_dir, f"denoise-{set_name}", payload, table)
        _sigma_plot(out_dir / f"denoise-{set_name}-psnr.png", set_name, summary, all_methods)
        payloads[set_name] = payload
        log(table)
    print(f"reproduce with: {command}")
    return payloads


def _merge(old: dict, rows: list, runs: list, fits: dict, models: dict, n_images: int):
    """Fold this run into an earlier results file of the same set: rows are keyed by (image, condition);
    a method measured now replaces its earlier entry, every other entry is kept with its run index, and so
    are the earlier runs' self-supervised fits and model records (a run that loads no model keeps them)."""
    if old.get("n_images") != n_images or "runs" not in old:
        return rows, runs, fits, models
    base = len(old["runs"])
    for r in old["runs"]:  # files from before runs kept their CPU: the file's last one
        r.setdefault("cpu", old.get("provenance", {}).get("cpu"))
    merged = {(r["image"], r["condition"]): r for r in old["per_image"]}
    for r in rows:
        for m, v in r.items():
            if isinstance(v, dict) and "psnr" in v and m != "noisy":
                v["run"] = base
        key = (r["image"], r["condition"])
        if key in merged:
            if merged[key].get("noisy_sha256") != r["noisy_sha256"]:
                raise VaekitError(f"{key}: the noisy input differs from the earlier run's; use --fresh-file")
            merged[key].update(r)
        else:
            merged[key] = r
    return (
        list(merged.values()),
        old["runs"] + runs,
        {**old.get("selfsup_fits", {}), **fits},
        {**old.get("models", {}), **models},
    )


def _fit_selfsup(out_dir: Path, set_name: str, cond: dict, images, noisy, args, method=None):
    """Fit a self-supervised denoiser (``method``: see :func:`vaekit.tasks.selfsup.fit_config`) on this
    condition's noisy images (as float .npy; never a clean one), once: the run folder under results/.cache
    is reused.  Returns (the denoiser, fit record)."""
    import torch

    from ..pretrained import load_model
    from ..tasks import selfsup
    from ..tasks.denoise import load_denoiser

    data = _noisy_folder(out_dir, set_name, cond, images, noisy)
    cfg, _ = selfsup.fit_config(
        data, sigma=cond.get("sigma"), noise=cond["noise"], peak=cond.get("peak"), threads=args.threads, method=method
    )
    kind = "r2r" if cfg.model == "denoise-vae-selfsup" else "divnoising"
    run = out_dir / ".cache" / f"selfsup-{kind}-{set_name}-{cond['tag']}-n{len(images)}" / "run"
    done = (run / "checkpoint.pt").is_file() and torch.load(
        run / "checkpoint.pt", weights_only=True, map_location="cpu"
    )["step"] >= cfg.max_steps
    t0 = time.perf_counter()
    if not done:
        selfsup.fit(
            data,
            run,
            sigma=cond.get("sigma"),
            noise=cond["noise"],
            peak=cond.get("peak"),
            threads=args.threads,
            quiet=True,
            method=method,
            command=f"(bench denoise fit on {set_name} {cond['tag']})",
        )
    ck = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")
    torch.set_num_threads(args.threads)
    rec = {
        "method": kind,
        "steps": ck["step"],
        "best_step": ck["best_step"],
        "fit_wall_s": round(ck["wall_time_s"], 1),
        "this_run_s": round(time.perf_counter() - t0, 1),
        "settings": selfsup.SETTINGS_R2R if kind == "r2r" else selfsup.SETTINGS,
        "side_information": "the true sigma" if cond["noise"] == "gaussian" else "the peak",
    }
    model = load_model(run).eval()
    if kind == "r2r":  # the test rule frozen now (a cached fit may predate it)
        rule = {k: v for k, v in selfsup.SETTINGS_R2R["model_args"].items() if k.startswith("test_")}
        for k, v in rule.items():
            setattr(model, k, v)
        rec["test_rule"] = rule
    return (load_denoiser(model) if kind == "r2r" else selfsup.SelfSupervisedDenoiser(model)), rec


def _noisy_folder(out_dir: Path, set_name: str, cond: dict, images, noisy) -> Path:
    """The condition's noisy inputs as float .npy files (what the self-supervised fits read)."""
    data = out_dir / ".cache" / f"noisy-{set_name}-{cond['tag']}-n{len(images)}"
    data.mkdir(parents=True, exist_ok=True)
    for (name, _), y in zip(images, noisy):
        dest = data / (Path(name).stem + ".npy")
        if not dest.is_file():
            np.save(dest, y.astype(np.float32))
    return data


def _sigma_plot(path: Path, set_name: str, summary: dict, methods) -> None:
    """PSNR against sigma, one line per method and protocol (unclipped solid, clipped 8-bit dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .common import save_figure

    curves = {}
    for tag, s in summary.items():
        if not tag.startswith("sigma"):
            continue
        level, clipped = float(tag[5:].split("-")[0]), tag.endswith("-clipped")
        for m in methods:
            if m in s:
                curves.setdefault((m, clipped), []).append((level, s[m]["psnr"]))
    if not any(len(v) > 1 for v in curves.values()):
        return
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (m, clipped), pts in sorted(curves.items()):
        pts.sort()
        ax.plot(*zip(*pts), "--" if clipped else "-", marker="o", ms=3, label=m + (" (8-bit)" if clipped else ""))
    ax.set_xlabel("sigma (0-255)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Denoising on {set_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _table(set_name, summary, methods, commands) -> str:
    lines = [
        f"**{set_name}** -- PSNR dB / SSIM / median s per image (one thread)",
        "",
        "| method | " + " | ".join(summary) + " |",
        "|---|" + "---|" * len(summary),
    ]
    for m in methods:
        cells = []
        for tag in summary:
            v = summary[tag].get(m)
            cells.append("–" if v is None else f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['seconds_median']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| (noisy input) | " + " | ".join(f"{summary[t]['noisy']['psnr']:.2f}" for t in summary) + " |")
    est = {t: s["sigma_estimator"] for t, s in summary.items() if "sigma_estimator" in s}
    if est:
        lines += [
            "",
            "sigma estimator (vae-blind), mean error / mean |error| on the 0–255 scale: "
            + ", ".join(f"{t}: {v['mean_error']:+.2f} / {v['mean_abs_error']:.2f}" for t, v in est.items()),
        ]
    lines += ["", "Reproduce (these runs, in order, merge into the file; seconds compare only within a run):", ""]
    lines += [f"{i}. `{c}`" + (f" ({cpu})" if cpu else "") for i, (c, cpu) in enumerate(commands)] + [""]
    return "\n".join(lines)


def _picture(path: Path, pics: dict, methods, row) -> None:
    """One 128-pixel crop of the first image across methods, PSNR under each."""
    clean = pics["clean"]
    h, w = clean.shape[:2]
    c = min(128, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    names = ["clean", "noisy"] + [m for m in methods if m in pics]
    picture_row(
        path,
        [
            (n + ("" if n == "clean" else f"\n{row[n]['psnr']:.2f} dB"), pics[n][top : top + c, left : left + c])
            for n in names
        ],
    )
