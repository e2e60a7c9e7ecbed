"""Design d: a small conv VAE compressing 32x32 colour patches, against JPEG and PNG at the same size.

    python examples/d_patch_codec.py --patches ../shared/data/bsds400 -o example-out

Trains a small `codec-factorized` (Ballé 2017: conv + GDN encoder, factorized
prior, 3 qualities) on random 32x32 crops for a few minutes, then codes
held-out crops into real `.vkc` files and compares, per patch and at the same
file size: JPEG (the highest quality that is no larger) and PNG (lossless,
for the size).  Prints bpp and PSNR; file sizes include every header, which
is what hurts JPEG most on tiny images.
"""

import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import parser  # noqa: E402

import vaekit  # noqa: E402
from vaekit.io import write_image  # noqa: E402
from vaekit.tasks.compress import compress, decompress  # noqa: E402
from vaekit.training.config import TrainConfig  # noqa: E402

DEFAULT_PATCHES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds400"


def synthetic_photos(folder: Path, n: int = 8, seed: int = 0) -> Path:
    """Smooth colour fields with edges, for --tiny runs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:96, :96] / 96.0
    for i in range(n):
        a = rng.uniform(0, 1, (3, 3))
        img = np.stack([a[c, 0] + a[c, 1] * xx + a[c, 2] * (yy > rng.uniform(0.2, 0.8)) for c in range(3)], 2)
        Image.fromarray((np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)).save(folder / f"s{i}.png")
    return folder


def psnr(a, b):
    return 10 * np.log10(255**2 / max(np.mean((a.astype(float) - b) ** 2), 1e-10))


def jpeg_at_size(patch, max_bytes):
    best = None
    for q in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, format="JPEG", quality=q)
        if buf.tell() > max_bytes:
            break
        best = buf.getvalue()
    if best is None:
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, format="JPEG", quality=1)
        best = buf.getvalue()
    return best


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--patches", default=str(DEFAULT_PATCHES), help="folder of photos to cut 32x32 crops from")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.output)
    photos = synthetic_photos(out / "tiny-photos") if args.tiny else Path(args.patches)
    cfg = TrainConfig.from_dict(
        {
            "model": "codec-factorized",
            "model_args": {"N": 32, "M": 48, "lambdas": [0.004, 0.016, 0.064]},
            "data": "folder",
            "data_dir": str(photos),
            "patch_size": 32,
            "patches_per_image": 8,
            "batch_size": 32,
            "max_steps": 10 if args.tiny else args.steps,
            "lr": 1e-3,
            "min_lr": 1e-5,
            "grad_clip": 1.0,
            "seed": args.seed,
            "eval_every": 10 if args.tiny else 1000,
            "val_patches_per_image": 2,
        }
    )
    vaekit.train(cfg, out / "patch-codec-run", quiet=True)
    model = vaekit.load_model(out / "patch-codec-run")
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".png", ".jpg"))[-4:]
    rng = np.random.default_rng(args.seed)
    patches = []
    for f in files:  # held-out crops: the last files are the validation split of the run
        im = np.array(Image.open(f).convert("RGB"))
        for _ in range(4 if args.tiny else 25):
            y, x = rng.integers(0, im.shape[0] - 32), rng.integers(0, im.shape[1] - 32)
            patches.append(im[y : y + 32, x : x + 32])
    figures = {}
    for q in range(1, model.qualities + 1):
        rows = []
        for p in patches:
            data = compress(p, q, model=model)
            rec = decompress(data, model=model)
            jpg = jpeg_at_size(p, len(data))
            jrec = np.array(Image.open(io.BytesIO(jpg)).convert("RGB"))
            buf = io.BytesIO()
            Image.fromarray(p).save(buf, format="PNG", optimize=True)
            rows.append((len(data), psnr(p, rec), len(jpg), psnr(p, jrec), buf.tell()))
        r = np.mean(rows, axis=0)
        figures[q] = {
            "vkc_bpp": r[0] * 8 / 1024,
            "vkc_psnr": r[1],
            "jpeg_bpp": r[2] * 8 / 1024,
            "jpeg_psnr": r[3],
            "png_bpp": r[4] * 8 / 1024,
        }
        f = figures[q]
        print(
            f"quality {q}: vaekit {f['vkc_bpp']:.2f} bpp {f['vkc_psnr']:.2f} dB | JPEG at that size "
            f"{f['jpeg_bpp']:.2f} bpp {f['jpeg_psnr']:.2f} dB | PNG (lossless) {f['png_bpp']:.2f} bpp"
        )
    write_image(
        out / "d_patches.png",
        np.concatenate(
            [
                np.concatenate(patches[:8], 1),
                np.concatenate([decompress(compress(p, 2, model=model), model=model) for p in patches[:8]], 1),
            ]
        ),
    )
    print(f"{len(patches)} held-out 32x32 patches; {time.perf_counter() - t0:.0f} s")
    return figures


if __name__ == "__main__":
    main()
