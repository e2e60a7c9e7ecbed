"""Compress and decompress a 50-megapixel image and report the peak memory (RSS).

    python scripts/large_image.py [--model codec-hyperprior] [--megapixels 50] [--threads 2]

The picture is the shipped sample photo tiled and jittered to the size asked
(no data-set image).  Tiles are coded independently, so the peak memory is the
image itself (uint8 + one float copy) plus one tile's activations.
"""

import argparse
import resource
import sys
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="codec-hyperprior")
    ap.add_argument("--megapixels", type=float, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("-o", "--output", default="results", help="writes compress-large-image.{json,md} here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vaekit.samples import sample_photo
    from vaekit.tasks.compress import compress_info, decompress, load_codec

    photo = sample_photo("chelsea")
    w = int((args.megapixels * 1e6 * 1.5) ** 0.5)
    h = int(args.megapixels * 1e6 / w)
    reps = (-(-h // photo.shape[0]), -(-w // photo.shape[1]), 1)
    img = np.tile(photo, reps)[:h, :w]
    rng = np.random.default_rng(0)
    img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    model = load_codec(args.model)
    t = time.perf_counter()
    data, info = compress_info(img, args.quality, model=model)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    rec = decompress(data, model=model)
    t_dec = time.perf_counter() - t
    mse = float(np.mean((rec.astype(np.float64) - img) ** 2))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    line = (
        f"{w}x{h} ({w * h / 1e6:.1f} MP), {info['tiles']} tiles, quality {args.quality}: "
        f"{info['bpp']:.3f} bpp, PSNR {10 * np.log10(255**2 / mse):.2f} dB; encode {t_enc:.0f} s, "
        f"decode {t_dec:.0f} s ({args.threads} threads); peak RSS {peak_gb:.2f} GB"
    )
    from pathlib import Path

    from vaekit.bench.common import provenance, write_results

    command = "python scripts/large_image.py " + " ".join(sys.argv[1:])
    payload = {
        "task": "compress-large-image",
        "command": command,
        "width": w,
        "height": h,
        "tiles": info["tiles"],
        "quality": args.quality,
        "bpp": info["bpp"],
        "psnr": 10 * np.log10(255**2 / mse),
        "encode_s": t_enc,
        "decode_s": t_dec,
        "peak_rss_gb": peak_gb,
        "provenance": provenance({"jitter": 0}, (getattr(model, "card", {}) or {}).get("sha256")),
    }
    write_results(Path(args.output), "compress-large-image", payload, f"{line}\n\nReproduce: `{command}`\n")
    print(line)


if __name__ == "__main__":
    main()
