"""Ship a training run as a named model, with the VAE statistics its card reports.

    python scripts/ship.py NAME --run RUN [--note "how the run went"] [--n 12]
    python scripts/ship.py NAME --card-figures      # after its benchmarks: the figures in results/ -> its card

NAME is one of MODELS below; each entry says which data the model saw, which held-out images its statistics
use, and what the model cannot do.  The statistics are measured on the shipped file, on validation images
only (never a test set): for the conditional denoisers and the inpainter the KL per latent channel (active
units), the spread of posterior draws and its calibration (how often |error of the mean| <= 2 std); for the
exposure posterior the compensation benchmark on photos-val.
"""

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from vaekit import data as vd
from vaekit import degrade
from vaekit.bench.compress import vae_stats
from vaekit.io import atomic_write_text, read_array
from vaekit.metrics import hole_psnr, psnr_u8, to_u8
from vaekit.pretrained import load_pretrained, ship, update_shipped_card
from vaekit.tasks.denoise import vae_denoise
from vaekit.tasks.inpaint import inpaint, pairwise_distance

BSDS = "BSDS500 images (Berkeley): non-commercial research use; not redistributed"
PHOTOS = "../shared/data/photos (per-file licences in its INDEX.tsv; research use); not redistributed"
LEVELS = (
    "Gaussian noise at a known or estimated level, or a per-pixel level map (trained on one level per image; a "
    "blind level follows the brightness where shot noise does; real camera noise is still only partly removed). "
)
MODELS = {
    "denoise-color": {
        "kind": "denoise",
        "mode": "RGB",
        "config": "configs/denoise-color-deep.yaml",
        "storage": "float16",  # as the releases it grows from
        "data_dir": "../shared/data/photos",
        "val": "split",
        "data": {
            "licence": PHOTOS
            + "; through its start, denoise-gray: train400 (BSDS crops, Berkeley non-commercial terms)",
            "train": "starts from denoise-gray (stages 1-3: its card); then the photos train split in colour "
            "(948 images), area-downscaled by 2, random crops with flips: 96x96 for 8,000 steps "
            "(configs/denoise-color-opponent.yaml), then 160x160 for 2,000 (configs/denoise-color-opponent2.yaml); "
            "then the camera branch alone, the rest frozen, on 160x160 crops (configs/denoise-color-camera.yaml); "
            "then 2,000 more steps of 160x160 crops for all but the branch (configs/denoise-color-opponent3.yaml), "
            "and three more such cycles on 176x176 crops in batches of 5; then one residual block after each of the "
            "decoder's 1/4 and 1/2 levels, trained alone (configs/denoise-color-deep.yaml), 2,000 more steps of them "
            "alone, and 2,000 steps of the whole model on white noise (the camera branch carried untouched)",
            "validation": "photos-val (71 images)",
            "noise": "Gaussian sigma ~ U(0, 55) on the 0-255 scale, added in RGB; half of the inputs clipped to 8 "
            "bits; the camera branch: simulated camera files (Poisson-Gaussian noise, 100-4,000 photons at white, "
            "through an RGGB mosaic, 8 bits and JPEG quality 80-97) at the level map the blind estimator reads on each",
        },
        "limits": LEVELS + "Correlated noise on colour camera JPEGs goes through a camera branch trained on simulated "
        "camera files (a noise model, not real sensors). Trained on downscaled photos: noise and detail at the scale "
        "of phone and camera JPEGs.",
    },
    "denoise-gray": {
        "kind": "denoise",
        "mode": "L",
        "config": "configs/denoise-gray-from-color.yaml",
        "storage": "float16",
        "arch_args": {"ensemble": 2},  # two passes (the image and its half turn): chosen on photos-val in gray
        "data_dir": "../shared/data/photos",
        "val": "split",
        "data": {
            "licence": PHOTOS + "; stage 1: train400 (DnCNN/TNRD crops of BSDS images, Berkeley non-commercial terms)",
            "train": "stage 1: 360 train400 images, 64x64 crops (configs/denoise-gray.yaml); stage 2: the photos train "
            "split in gray, area-downscaled by 2, 96x96 crops (configs/denoise-gray-photos.yaml); stage 3: 5,000 more "
            "steps of stage 2's recipe (configs/denoise-gray-photos3.yaml); then denoise-color grew from stage 3 and "
            "trained on the photos train split in colour (its card); stage 4: its tensors that the gray network has, "
            "trained whole on the photos train split in gray, area-downscaled by 2, 176x176 crops "
            "(configs/denoise-gray-from-color.yaml)",
            "validation": "stage 1: the last 40 train400 images; stages 2 and 3: photos-val",
            "noise": "Gaussian sigma ~ U(0, 55) on the 0-255 scale; in stages 2 and 3 half of the inputs clipped to 8 "
            "bits",
        },
        "limits": LEVELS + "Correlated noise on camera JPEGs is denoised on 2x2 pixel-shuffled sub-images. Colour "
        "images go through it channel by channel in opponent colours.",
    },
    "inpaint-color": {
        "kind": "inpaint",
        "config": "configs/inpaint-color-deep2.yaml",
        "data_dir": "../shared/data/bsds400",
        "val": "split",
        "arch_args": {"prefill": "exact"},
        "data": {
            "licence": BSDS,
            "train": "bsds400 rows of SPLITS.tsv not marked 'val', random crops with flips",
            "validation": "the 32 'val' rows",
            "masks": "drawn inside the model: random pixels, brush strokes "
            "2-28 px wide, boxes 8-56 px, text-like marks",
        },
        "limits": "Fills are smooth continuations of the surroundings, not hallucinated objects; boxes much larger "
        "than ~50 px are filled coarse to fine and come out blurry. Its fills differ only where the hole "
        "is deep (8x8 blocks at least 90% missing).",
    },
    "codec-hyperprior": {
        "kind": "codec",
        "config": "configs/codec-post.yaml",
        "arch_args": {"strip": 32},  # the synthesis in strips on several threads (model id 7 on)
        "data_dir": "../shared/data/photos",
        "val": "split",
        "data": {
            "licence": PHOTOS + " and, through stage 1, BSDS500 images (Berkeley, non-commercial research use)",
            "train": "stage 1: 400 BSDS500 images, 192x192 crops (release r2); stages 2-4: the photos train split "
            "(948 images) at full size, 256x256 crops with flips; stage 5 (the post-filter): 128x128 crops of the same",
            "validation": "photos-val crops (2 per image); releases are chosen on the photos-val images, never Kodak",
        },
        "limits": "8 qualities from about 0.18 to 1.2 bpp on Kodak; above that the transforms (M = 128 latent "
        "channels) flatten the curve. PSNR-trained: at low rates it blurs rather than invents texture.",
    },
    "compensate-posterior": {
        "kind": "exposure",
        "config": "configs/compensate-posterior2.yaml",
        "data_dir": "../shared/data/photos",
        "val": "split",
        "data": {
            "licence": PHOTOS,
            "train": "the photos train split (948 images), area-downscaled by 3, random 112x112 crops with flips, "
            "each degraded on the fly from the model's prior (30% untouched, 35% mild, 35% strong; 10% in gray)",
            "validation": "the 71 photos-val images (8 crops each)",
        },
        "limits": "Global gain, gamma and per-channel cast only; cannot recover clipped highlights or shadows or "
        "fix local lighting. What counts as well exposed is learned from the training photos, so intended dark or "
        "tinted looks may be 'corrected' when their evidence is strong.",
    },
}
INPAINT_KINDS = ("box", "pixels0.5", "strokes-thin", "strokes-medium", "strokes-thick")


def val_files(spec):
    files = vd.find_images(spec["data_dir"])
    if spec["val"] == "last40":
        return files[-40:]
    return vd.split_by_file(files, Path(spec["data_dir"]) / "SPLITS.tsv")[1]


def denoise_stats(model, spec, n, sigmas=(15, 25, 50), draws=16):
    """KL per latent channel, draws' spread and calibration, one-pass and mean-of-draws PSNR, on 128x128 crops."""
    images = []
    for f in val_files(spec)[:n]:
        a = np.asarray(read_array(f), dtype=np.float64)
        images.append((a.mean(-1) if spec["mode"] == "L" and a.ndim == 3 else a)[:128, :128])
    res = {}
    for s in sigmas:
        per_ch, cover, spread, psnr1, psnr_k = [], [], [], [], []
        for i, x in enumerate(images):
            t = torch.from_numpy(x.astype(np.float32))
            t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
            h, w = (t.shape[-2] // model.STRIDE) * model.STRIDE, (t.shape[-1] // model.STRIDE) * model.STRIDE
            torch.manual_seed(i)
            per_ch.append(model.latent_stats(t[..., :h, :w], float(s))[0].mean(0).numpy())  # rows: opponent channels
            x = x[:h, :w]
            y = degrade.gaussian(x, s, seed=100 + i)
            mean, std, _ = vae_denoise(model, y, s, samples=draws, seed=i)
            cover.append(float(np.mean(np.abs(mean - x) <= 2 * std)))
            spread.append(float(np.mean(std)) * 255)
            psnr1.append(psnr_u8(vae_denoise(model, y, s)[0], x))
            psnr_k.append(psnr_u8(mean, x))
        ch = np.mean(per_ch, 0)
        res[f"sigma{s}"] = {
            "kl_nats_per_latent_position_by_channel": [round(float(v), 4) for v in ch],
            "active_latent_channels": int((ch > 0.01).sum()),
            "latent_channels": int(len(ch)),
            f"mean_std_of_{draws}_draws_grey_levels": round(float(np.mean(spread)), 3),
            "coverage_abs_error_le_2std": round(float(np.mean(cover)), 4),
            "psnr_one_pass": round(float(np.mean(psnr1)), 3),
            f"psnr_mean_of_{draws}": round(float(np.mean(psnr_k)), 3),
        }
        print(s, res[f"sigma{s}"], flush=True)
    return {
        f"validation ({n} held-out 128x128 crops, seeded Gaussian noise, not clipped; the std combines the "
        f"spread of {draws} posterior draws with the decoder's scale)": res
    }


def inpaint_stats(model, spec, n, draws=8):
    """Per mask kind: KL per latent channel, one-pass / mean-of-fills / per-fill hole PSNR, fill diversity."""
    images = [np.asarray(read_array(f), dtype=np.float64) for f in val_files(spec)[:n]]
    res = {}
    for kind in INPAINT_KINDS:
        per_ch, one, mean_k, per_fill, pair, cover = [], [], [], [], [], []
        for i, x in enumerate(images):
            mask = degrade.make_mask(kind, x.shape, 5000 + i)
            h, w = (x.shape[0] // 8) * 8, (x.shape[1] // 8) * 8
            t = torch.from_numpy(x[:h, :w].astype(np.float32)).permute(2, 0, 1)[None]
            mt = torch.from_numpy(mask[:h, :w].astype(np.float32))[None, None]
            per_ch.append(model.latent_stats(t, mt)[0][0].numpy())
            cu = to_u8(x)
            r = inpaint(x, mask, draws, model=model, seed=i, details=True)
            one.append(hole_psnr(to_u8(inpaint(x, mask, model=model)), cu, mask))
            mean_k.append(hole_psnr(to_u8(r.image), cu, mask))
            per_fill.append(statistics.mean(hole_psnr(to_u8(f), cu, mask) for f in r.samples))
            pair.append(255 * pairwise_distance(r.samples, mask))
            cover.append(float(np.mean(np.abs(r.image - x)[mask] <= 2 * r.std[mask] + 0.5 / 255)))
        ch = np.mean(per_ch, 0)
        res[kind] = {
            "kl_nats_per_latent_position_by_channel": [round(float(v), 4) for v in ch],
            "active_latent_channels": int((ch > 0.01).sum()),
            "latent_channels": int(len(ch)),
            "hole_psnr_one_pass": round(float(np.mean(one)), 3),
            f"hole_psnr_mean_of_{draws}": round(float(np.mean(mean_k)), 3),
            "hole_psnr_per_fill": round(float(np.mean(per_fill)), 3),
            "pairwise_hole_rmse_grey_levels": round(float(np.mean(pair)), 2),
            "coverage_abs_error_le_2std_in_hole": round(float(np.mean(cover)), 4),
        }
        print(kind, res[kind], flush=True)
    return {f"validation ({n} bsds400 'val' images, seeded masks; std and coverage from {draws} fills)": res}


def card_figures(name: str, root: Path = Path(".")) -> dict:
    """The card's benchmark figures from ``root``/results/, where they measured these very weights: flat numbers
    (what ``vaekit models`` shows) and the results file behind each set (which holds the commands)."""
    card = json.load(open(root / "src/vaekit/weights" / f"{name}.json"))
    sha = card["sha256"]
    figs, sources = {}, {}
    for kind, sets in CARD_SETS[name].items():
        for s in sets:
            path = root / "results" / f"{kind}-{s}.json"
            r = json.load(open(path)) if path.exists() else {}
            if kind == "denoise":
                got = next((m["sha256"] for m in r.get("models", {}).values() if m["name"] == name), "")
            elif kind == "compress":
                got = r.get("provenance", {}).get("weights_sha256", "")
            else:
                got = r.get("model", {}).get("sha256", "")
            if got != sha:
                print(f"{path}: {'measured other weights' if r else 'missing'}; its figures leave the card")
                continue
            key = s.replace("-", "_")
            sources[s] = str(path.relative_to(root))
            if kind == "denoise":
                cond = r["summary"]["real" if s.startswith("realnoise") else "sigma25-clipped"]
                tag = "real_blind" if s.startswith("realnoise") else "sigma25_clipped"
                figs[f"{key}_{tag}_psnr"] = round(cond["vae"]["psnr"], 2)  # real pairs: the vae row is blind
                for other in ("bm3d", "noisy"):
                    if other in cond:
                        figs[f"{key}_{tag}_minus_{other}_db"] = round(cond["vae"]["psnr"] - cond[other]["psnr"], 2)
            elif kind == "compress":
                for other in ("jpeg", "webp", "avif"):
                    v = r["bd_rate"]["vaekit"].get(f"vs_{other}")
                    if v is not None:
                        figs[f"{key}_bd_rate_vs_{other}_pct"] = round(v, 1)
            else:  # inpaint: the hole PSNR per mask kind and its margin over the best classical fill
                su = {k: v for k, v in r["summary"].items() if "vae" in v}
                kept = {k: v for k, v in card["metrics"].get(key, {}).items() if k != "command"}  # other blocks stay
                figs[key] = kept | {
                    "hole_psnr_vae": {k: round(v["vae"]["hole_psnr"], 2) for k, v in su.items()},
                    "hole_psnr_vae_minus_best_classical": {
                        k: round(v["vae"]["margin_over_best_classical"], 2) for k, v in su.items()
                    },
                    "seconds_median_vae": round(statistics.median(v["vae"]["seconds_median"] for v in su.values()), 2),
                }
                figs[f"{key}_hole_psnr_minus_best_classical_db"] = round(
                    statistics.mean(v["vae"]["margin_over_best_classical"] for v in su.values()), 2
                )
    if sources:
        figs["benchmark_results"] = sources
    return figs


def figure_keys(name: str, metrics: dict) -> list[str]:
    """The keys of a card's metrics that :func:`card_figures` owns (per set, and the results files)."""
    sets = tuple(s.replace("-", "_") for group in CARD_SETS[name].values() for s in group)
    return [k for k in metrics if k == "benchmark_results" or k.startswith(sets)]


# which results/<kind>-<set>.json files a card's figures come from
CARD_SETS = {
    "denoise-color": {"denoise": ("kodak", "cbsd68", "mcmaster", "photos-val", "realnoise-cc15")},
    "denoise-gray": {"denoise": ("set12", "bsd68")},
    "inpaint-color": {"inpaint": ("cbsd68", "kodak")},
    "codec-hyperprior": {"compress": ("kodak", "photos-val")},
}


def exposure_stats(model, spec, n):
    """``vaekit bench compensate`` on the first ``n`` photos-val images (validation), the shipped model only."""
    import tempfile

    from vaekit.bench import BENCHES

    with tempfile.TemporaryDirectory() as d:
        r = BENCHES["compensate"](
            data_root=str(Path(spec["data_dir"]).parent),
            sets="photos-val",
            methods="none,vae",
            limit=n,
            output=d,
            quiet=True,
        )["photos-val"]
    return {
        f"photos-val ({n} images; PSNR capped at 60 dB)": {
            case: {k: round(v["vae"][k], 3) for k in ("psnr", "unchanged", "seconds_median")}
            | {"psnr_uncorrected": round(v["none"]["psnr"], 2)}
            for case, v in r["summary"].items()
        }
    }


def codec_stats(model, spec, n, draws=4):
    """The codec as a VAE per quality (:func:`vaekit.bench.compress.vae_stats`: the rate, the latent channels that
    carry it, the spread of posterior decodings) on 256x256 centre crops of the first ``n`` photos-val images."""
    stats = vae_stats(model, [np.asarray(read_array(f), dtype=np.float32) for f in val_files(spec)[:n]], draws)
    res = {str(q): {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for q, s in stats.items()}
    print(res, flush=True)
    return {
        f"vae_as_a_vae (first {n} photos-val images, 256x256 centre crops)": {
            "kl": "the rate, bits per pixel (KL of the uniform posterior to the prior, up to a constant)",
            "active_channels": "latent channels whose mean rate > 0.01 bit/element",
            "sample_spread_255": f"mean per-pixel std of {draws} decodings g_s(y_hat + u), u ~ U(-1/2, 1/2), 0-255",
            "per_quality": res,
        }
    }


STATS = {"denoise": denoise_stats, "inpaint": inpaint_stats, "exposure": exposure_stats, "codec": codec_stats}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--run", help="the run folder (model.safetensors + model.json)")
    ap.add_argument("--note", default=None, help="how the run went (the card's training note)")
    ap.add_argument("--n", type=int, default=12, help="validation images for the statistics")
    ap.add_argument("--card-figures", action="store_true", help="copy the figures in results/ into the card")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.card_figures:
        if a.name not in CARD_SETS:
            ap.error(f"--card-figures: {a.name} has no benchmark figures (those that do: {', '.join(CARD_SETS)})")
        figs = card_figures(a.name)
        path = Path("src/vaekit/weights") / f"{a.name}.json"
        card = json.load(open(path))  # figures of weights no longer shipped leave, the others are replaced
        stale = figure_keys(a.name, card["metrics"])
        card["metrics"] = {k: v for k, v in card["metrics"].items() if k not in stale} | figs
        atomic_write_text(path, json.dumps(card, indent=2) + "\n")
        print(f"{a.name} card: " + ", ".join(k for k in figs if k != "benchmark_results"))
        raise SystemExit(0)
    if not a.run:
        ap.error("--run is required")
    spec = MODELS[a.name]
    card = json.load(open(Path(a.run) / "model.json"))
    note = a.note if a.note is not None else card.get("training", {}).get("note", "")
    # the run's own command gives its output folder and its overrides (key=value), so the card reproduces it
    words = card.get("training", {}).get("command", "").split()
    out = words[words.index("-o") + 1] if "-o" in words[:-1] else a.run
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    if "--seed" in words[:-1]:
        overrides += ["--seed", words[words.index("--seed") + 1]]
    p = ship(
        a.run,
        a.name,
        arch_args=spec.get("arch_args"),
        dtype=getattr(torch, spec.get("storage", "int8")),
        data=spec["data"],
        limits=spec["limits"],
        training={
            "command": " ".join(
                ["vaekit train", spec["config"], "--data-dir", spec["data_dir"], "-o", out, *overrides, "--quiet"]
            ),
            "note": note,
        },
    )
    print(p, flush=True)
    update_shipped_card(a.name, metrics=STATS[spec["kind"]](load_pretrained(a.name), spec, a.n))
