"""Design c: a repair pipeline -- preprocess, encode, decode, reconstruction error -- against filters.

    python examples/c_repair_pipeline.py --data-dir ../shared/data/mnist -o example-out

Test digits are damaged (Gaussian noise sigma 0.3, or 10% salt-and-pepper, or
a missing 8x8 block).  The pipeline: preprocess (clip to [0, 1]), encode with
the shipped `mnist-vae`, decode the posterior mean, and measure the error to
the clean digit; the same damaged inputs go through a median and a Gaussian
filter (scipy).  Prints PSNR per damage and method.
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
from vaekit.io import grid, upscale, write_image  # noqa: E402
from vaekit.metrics import psnr  # noqa: E402


def damage(x: torch.Tensor, kind: str, rng) -> torch.Tensor:
    a = x.numpy().copy()
    if kind == "gaussian":
        a = a + rng.normal(0, 0.3, a.shape)
    elif kind == "salt-pepper":
        m = rng.random(a.shape)
        a[m < 0.05], a[m > 0.95] = 0.0, 1.0
    else:  # missing block, filled with zeros
        a[..., 10:18, 10:18] = 0.0
    return torch.from_numpy(np.clip(a, 0, 1).astype(np.float32))


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = vaekit.load_pretrained("mnist-vae")
    x, _ = mnist(args, "test", 64 if args.tiny else 1000)
    rng = np.random.default_rng(args.seed)
    table, pictures = {}, []
    for kind in ("gaussian", "salt-pepper", "block"):
        bad = damage(x, kind, rng)
        outs = {
            "damaged": bad,
            "vae": model.reconstruct(bad),
            "median 3x3": torch.from_numpy(ndimage.median_filter(bad.numpy(), size=(1, 1, 3, 3))),
            "gaussian filter": torch.from_numpy(ndimage.gaussian_filter(bad.numpy(), sigma=(0, 0, 1, 1))),
        }
        table[kind] = {k: float(psnr(v, x).mean()) for k, v in outs.items()}
        print(f"{kind:12s} " + "  ".join(f"{k} {v:.2f} dB" for k, v in table[kind].items()))
        pictures.append(torch.cat([x[:8], *(v[:8] for v in outs.values())]))
    out = Path(args.output)
    write_image(out / "c_repair.png", upscale(grid(torch.cat(pictures), nrow=8), 2))
    print(f"wrote {out / 'c_repair.png'}; {len(x)} digits; {time.perf_counter() - t0:.0f} s")
    return table


if __name__ == "__main__":
    main()
