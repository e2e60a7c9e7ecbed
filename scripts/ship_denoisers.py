"""Ship runs/denoise-gray and runs/denoise-color with their VAE statistics on held-out training data.

    python scripts/ship_denoisers.py [gray] [color]

Statistics (validation images only: train400's last 40 for gray, the bsds400 'val' rows for colour):
the KL term per image, the active latent channels, the spread of posterior draws and its calibration
(how often |error of the mean| <= 2 std), at sigma 15 / 25 / 50.  The benchmark figures are added to the
cards by scripts/ship_denoisers.py --bench after `vaekit bench denoise`.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vaekit import data as vd
from vaekit.degrade import gaussian
from vaekit.pretrained import load_from_files, ship, update_shipped_card
from vaekit.tasks.denoise import vae_denoise

torch.set_num_threads(1)

RUNS = {
    "gray": {"run": "runs/denoise-gray", "name": "denoise-gray", "mode": "L",
             "config": "configs/denoise-gray.yaml", "data_dir": "../shared/data/train400",
             "data": {"licence": "train400 (DnCNN/TNRD crops of BSDS images): Berkeley non-commercial research "
                                 "terms; not redistributed",
                      "train": "360 of the 400 train400 images (file order), random 64x64 crops with flips",
                      "validation": "the last 40 train400 images (file order)",
                      "noise": "Gaussian sigma ~ U(0, 55) on the 0-255 scale, added to [0, 1] values, not clipped"}},
    "color": {"run": "runs/denoise-color", "name": "denoise-color", "mode": "RGB",
              "config": "configs/denoise-color.yaml", "data_dir": "../shared/data/bsds400",
              "data": {"licence": "BSDS500 images (Berkeley): non-commercial research use; not redistributed",
                       "train": "bsds400 rows of SPLITS.tsv not marked 'val', random 64x64 crops with flips",
                       "validation": "the 32 'val' rows",
                       "noise": "Gaussian sigma ~ U(0, 55), i.i.d. per channel, not clipped"}},
}


def val_images(kind, n=12):
    r = RUNS[kind]
    files = vd.find_images(r["data_dir"])
    if kind == "gray":
        val = files[-40:]
    else:
        _, val = vd.split_by_file(files, Path(r["data_dir"]) / "SPLITS.tsv")
    from vaekit.io import read_array

    out = []
    for f in val[:n]:
        a = np.asarray(read_array(f), dtype=np.float64)
        if r["mode"] == "L" and a.ndim == 3:
            a = a.mean(-1)
        out.append(a[:128, :128])  # crops keep the statistics cheap
    return out


def stats(model, images, sigmas=(15, 25, 50), draws=16):
    res = {}
    for s in sigmas:
        kl, per_ch, cover, spread, psnr1, psnr16 = [], [], [], [], [], []
        for i, x in enumerate(images):
            t = torch.from_numpy(x.astype(np.float32))
            t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
            h, w = (t.shape[-2] // 8) * 8, (t.shape[-1] // 8) * 8
            t = t[..., :h, :w]
            torch.manual_seed(i)
            kc, npos = model.latent_stats(t, float(s))
            kl.append(float(kc.sum()) * npos)
            per_ch.append(kc[0].numpy())
            y = gaussian(x[:h, :w], s, seed=100 + i)
            mean, std, _ = vae_denoise(model, y, s, samples=draws, seed=i)
            one = vae_denoise(model, y, s)[0]
            err = np.abs(mean - x[:h, :w])
            cover.append(float(np.mean(err <= 2 * std)))
            spread.append(float(np.mean(std)) * 255)
            psnr1.append(10 * np.log10(1 / np.mean((np.clip(one, 0, 1) - x[:h, :w]) ** 2)))
            psnr16.append(10 * np.log10(1 / np.mean((np.clip(mean, 0, 1) - x[:h, :w]) ** 2)))
        ch = np.mean(per_ch, 0)
        res[f"sigma{s}"] = {"kl_nats_per_image_128px": round(float(np.mean(kl)), 1),
                            "kl_nats_per_latent_position_by_channel": [round(float(v), 4) for v in ch],
                            "active_latent_channels": int((ch > 0.01).sum()),
                            "latent_channels": int(len(ch)),
                            f"mean_std_of_{draws}_draws_grey_levels": round(float(np.mean(spread)), 3),
                            "coverage_abs_error_le_2std": round(float(np.mean(cover)), 4),
                            "psnr_one_pass": round(float(np.mean(psnr1)), 3),
                            f"psnr_mean_of_{draws}": round(float(np.mean(psnr16)), 3)}
        print(kind, s, res[f"sigma{s}"], flush=True)
    return res


if __name__ == "__main__":
    for kind in [k for k in sys.argv[1:] if k in RUNS] or list(RUNS):
        r = RUNS[kind]
        run = Path(r["run"])
        m = load_from_files(run / "model.safetensors", run / "model.json").eval()
        card = json.load(open(run / "model.json"))
        st = stats(m, val_images(kind))
        tr = card["training"]
        p = ship(run, r["name"], data=r["data"],
                 training={"command": f"vaekit train {r['config']} --data-dir {r['data_dir']} -o {r['run']} --quiet",
                           "note": tr.get("note", "")},
                 metrics={"validation (12 held-out 128x128 crops, seeded noise; the std combines the spread of "
                          "16 posterior draws with the decoder's scale)": st},
                 estimate="vaekit denoise: one pass with the prior mean (samples=0); --samples N: the mean of N "
                          "posterior draws, with their per-pixel std")
        print(p)
