"""Copy the benchmark figures of the shipped denoisers from results/denoise-<set>.json into their model cards.

    python scripts/card_bench_figures.py            # both cards, every condition measured so far

The gray card gets Set12 and BSD68, the colour card CBSD68 and McMaster: per condition the VAE's one-pass
PSNR / SSIM / median seconds, the mean of 8 draws and the blind row where measured, (C)BM3D's PSNR and
seconds, the best classical method, and the commands of the runs the figures come from.  Nothing is
measured here; the weights and their sha256 are not touched.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARDS = {"denoise-gray": ("set12", "bsd68"), "denoise-color": ("cbsd68", "mcmaster")}
HEADLINE = {"denoise-gray": ("bsd68", "bsd68_sigma25_psnr"), "denoise-color": ("cbsd68", "cbsd68_sigma25_psnr")}
KEY = "benchmarks (DnCNN protocol, one thread, same run per condition; from results/denoise-<set>.json)"
LEGACY = ("bsd68 sigma 25 (DnCNN protocol, one thread, same run)", "cbsd68_sigma25", "cbsd68_sigma15",
          "mcmaster_sigma25", "mcmaster_sigma15", "mcmaster_sigma50")
CLASSICAL = ("bm3d", "nlm", "tv", "opencv-nlm", "wavelet", "gaussian", "median")


def figures(res: dict) -> dict:
    out = {}
    commands = [r["command"] for r in res["runs"]]
    for cond, rows in res["summary"].items():
        if "vae" not in rows:
            continue
        v = rows["vae"]
        f = {"vae_psnr": round(v["psnr"], 2), "vae_ssim": round(v["ssim"], 3),
             "vae_seconds_median": round(v["seconds_median"], 2)}
        for name, key in (("vae-8", "vae_mean_of_8_psnr"), ("vae-blind", "vae_blind_psnr")):
            if name in rows:
                f[key] = round(rows[name]["psnr"], 2)
        if "bm3d" in rows:
            f["bm3d_psnr"] = round(rows["bm3d"]["psnr"], 2)
            f["bm3d_seconds_median"] = round(rows["bm3d"]["seconds_median"], 2)
        classical = {k: rows[k]["psnr"] for k in CLASSICAL if k in rows}
        if classical:
            best = max(classical, key=classical.get)
            f["best_classical"] = best
            f["vae_minus_best_classical_db"] = round(v["psnr"] - classical[best], 2)
        f["commands"] = sorted({commands[i] for i in v.get("runs", [])})
        out[cond] = f
    return out


def main() -> int:
    for name, sets in CARDS.items():
        path = ROOT / "src" / "vaekit" / "weights" / f"{name}.json"
        card = json.loads(path.read_text())
        block = {}
        for s in sets:
            rp = ROOT / "results" / f"denoise-{s}.json"
            if rp.exists():
                block[s] = figures(json.loads(rp.read_text()))
        for old in LEGACY:  # figures copied by hand before this script; the block below replaces them
            card["metrics"].pop(old, None)
        card["metrics"][KEY] = block
        s, k = HEADLINE[name]  # the one figure `vaekit models` lists
        if "sigma25" in block.get(s, {}):
            card["metrics"][k] = block[s]["sigma25"]["vae_psnr"]
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp, path)
        print(f"{path.relative_to(ROOT)}: " + ", ".join(f"{s} {len(b)} conditions" for s, b in block.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
