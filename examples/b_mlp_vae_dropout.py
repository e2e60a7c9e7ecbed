"""Design b: an MLP VAE with dropout on MNIST -- train, reconstruct, sample.

    python examples/b_mlp_vae_dropout.py --data-dir ../shared/data/mnist -o example-out

Trains `mlp-vae` (784-512-256-32, dropout 0.2, Bernoulli likelihood) with the
package's training loop for a few epochs, then prints the test ELBO and the
reconstruction PSNR and writes reconstructions and prior samples.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import mnist, parser  # noqa: E402

import vaekit  # noqa: E402
from vaekit.io import grid, upscale, write_image  # noqa: E402
from vaekit.training.config import TrainConfig  # noqa: E402


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    t0 = time.perf_counter()
    if args.tiny:  # the loop reads MNIST idx files; tiny mode writes synthetic ones
        from vaekit.data import write_idx_images

        data_dir = write_idx_images(out / "tiny-mnist", *mnist(args, "train", 600), *mnist(args, "test", 100))
    else:
        data_dir = args.data_dir
    cfg = TrainConfig.from_dict(
        {
            "model": "mlp-vae",
            "model_args": {"hidden": [512, 256], "latent_dim": 32, "dropout": 0.2},
            "data": "mnist",
            "data_dir": str(data_dir),
            "binarize": True,
            "batch_size": 128,
            "epochs": 1 if args.tiny else 5,
            "max_steps": 20 if args.tiny else 0,
            "lr": 1e-3,
            "min_lr": 1e-4,
            "kl_warmup_steps": 10 if args.tiny else 2000,
            "seed": args.seed,
            "val_size": 100 if args.tiny else 10000,
            "eval_every": 20 if args.tiny else 0,
        }
    )
    vaekit.train(cfg, out / "mlp-vae-run", quiet=True)
    model = vaekit.load_model(out / "mlp-vae-run")
    x, _ = mnist(args, "test", 100 if args.tiny else 1000)
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(args.seed))
    stats = vaekit.evaluate(model, x, k=0, seed=args.seed)
    rec = model.reconstruct(x[:16])
    write_image(out / "b_reconstructions.png", upscale(grid(torch.cat([x[:16], rec]), nrow=16), 2))
    write_image(out / "b_samples.png", upscale(grid(vaekit.generate(model, 64, seed=args.seed), nrow=8), 2))
    print(
        f"test ELBO {stats['elbo']:.2f} nats, KL {stats['kl']:.2f}, active units {stats['active_units']}, "
        f"reconstruction PSNR {stats['psnr']:.2f} dB on {len(x)} images; {time.perf_counter() - t0:.0f} s"
    )
    return stats


if __name__ == "__main__":
    main()
