"""Design a: restoration with a convolutional encoder/decoder VAE -- denoise and repair MNIST digits.

    python examples/a_conv_vae_restoration.py --data-dir ../shared/data/mnist -o example-out

Trains `conv-vae` (a fully convolutional ResNet encoder/decoder with a spatial
latent, Bernoulli likelihood) on MNIST with the package's loop for a few
minutes (two epochs).  Denoising: noisy digit -> encode -> decode.  Repair of an 8x8 hole:
fill it, encode, decode, put the decoded pixels back into the hole only, and
repeat (known pixels never change).  Prints PSNR against the clean digits,
with a median filter and a Gaussian filter on the same inputs.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _common import mnist, parser  # noqa: E402

import vaekit  # noqa: E402
from vaekit.data import write_idx_images  # noqa: E402
from vaekit.io import grid, upscale, write_image  # noqa: E402
from vaekit.metrics import psnr  # noqa: E402
from vaekit.training.config import TrainConfig  # noqa: E402


@torch.no_grad()
def repair(model, x, hole, iters=10):
    """Iterative projection: the hole starts grey and takes the VAE's decoding, known pixels stay."""
    cur = torch.where(hole, torch.full_like(x, 0.5), x)
    for _ in range(iters):
        cur = torch.where(hole, model.reconstruct(cur), x)
    return cur


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.output)
    data_dir = (
        write_idx_images(out / "tiny-mnist", *mnist(args, "train", 600), *mnist(args, "test", 100))
        if args.tiny
        else args.data_dir
    )
    cfg = TrainConfig.from_dict(
        {
            "model": "conv-vae",
            "model_args": {"in_channels": 1, "channels": [32, 64], "blocks": 1, "latent_channels": 8, "image_size": 28},
            "data": "mnist",
            "data_dir": str(data_dir),
            "binarize": True,
            "batch_size": 128,
            "epochs": 1 if args.tiny else 2,
            "max_steps": 10 if args.tiny else 0,
            "lr": 2e-3,
            "min_lr": 1e-4,
            "kl_warmup_steps": 5 if args.tiny else 200,
            "seed": args.seed,
            "val_size": 100 if args.tiny else 10000,
            "eval_every": 10 if args.tiny else 0,
        }
    )
    vaekit.train(cfg, out / "conv-vae-run", quiet=True)
    model = vaekit.load_model(out / "conv-vae-run").eval()
    x, _ = mnist(args, "test", 64 if args.tiny else 1000)
    rng = np.random.default_rng(args.seed)
    noisy = torch.from_numpy(np.clip(x.numpy() + rng.normal(0, 0.3, x.shape), 0, 1).astype(np.float32))
    hole = torch.zeros_like(x, dtype=torch.bool)
    hole[..., 10:18, 10:18] = True
    holed = torch.where(hole, torch.zeros_like(x), x)
    results = {
        "denoise": {
            "noisy": noisy,
            "vae": model.reconstruct(noisy),
            "median 3x3": torch.from_numpy(ndimage.median_filter(noisy.numpy(), size=(1, 1, 3, 3))),
            "gaussian filter": torch.from_numpy(ndimage.gaussian_filter(noisy.numpy(), (0, 0, 1, 1))),
        },
        "repair": {
            "holed": holed,
            "vae": repair(model, x, hole),
            "median 3x3": torch.where(
                hole, torch.from_numpy(ndimage.median_filter(holed.numpy(), size=(1, 1, 9, 9))), x
            ),
        },
    }
    figures = {}
    for task, outs in results.items():
        figures[task] = {k: float(psnr(v, x).mean()) for k, v in outs.items()}
        print(f"{task:8s} " + "  ".join(f"{k} {v:.2f} dB" for k, v in figures[task].items()))
    assert torch.equal(results["repair"]["vae"][~hole], x[~hole])  # known pixels untouched
    rows = [x[:8]] + [v[:8] for outs in results.values() for v in outs.values()]
    write_image(out / "a_restoration.png", upscale(grid(torch.cat(rows), nrow=8), 2))
    print(f"wrote {out / 'a_restoration.png'}; {len(x)} test digits; {time.perf_counter() - t0:.0f} s")
    return figures


if __name__ == "__main__":
    main()
