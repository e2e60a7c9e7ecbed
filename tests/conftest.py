import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED / "mnist"


def write_idx(path: Path, arr: np.ndarray, compress=False):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def tiny_mnist(tmp_path):
    """A synthetic MNIST-shaped folder (uncompressed idx, so no official checksum applies):
    600 training and 100 test images of blurred random blobs."""
    rng = np.random.default_rng(0)

    def images(n):
        yy, xx = np.mgrid[:28, :28]
        cy, cx = rng.uniform(8, 20, (2, n, 1, 1))
        r = rng.uniform(3, 7, (n, 1, 1))
        return (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))).astype(np.uint8)

    d = tmp_path / "mnist"
    d.mkdir()
    for split, n in (("train", 600), ("t10k", 100)):
        write_idx(d / f"{split}-images-idx3-ubyte", images(n))
        write_idx(d / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return d


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def tiny_config(data_dir, **over):
    from vaekit.training.config import TrainConfig

    d = dict(
        model="mlp-vae",
        model_args={"hidden": [32], "latent_dim": 4},
        data="mnist",
        data_dir=str(data_dir),
        binarize=True,
        val_size=100,
        batch_size=50,
        max_steps=30,
        lr=1e-3,
        seed=3,
        ckpt_every=10,
        eval_every=10,
        kl_warmup_steps=5,
        grad_clip=50.0,
    )
    d.update(over)
    return TrainConfig.from_dict(d)


# small arguments for the compression family (tests/tasks/test_compress.py; the registry test reads them)
CODECS = {
    "codec-factorized": dict(N=8, M=8, lambdas=[0.003, 0.03]),
    "codec-scale-hyperprior": dict(N=8, M=8, lambdas=[0.003, 0.03]),
    "codec-mean-scale-hyperprior": dict(N=8, M=8, lambdas=[0.003, 0.03]),
    "codec-checkerboard": dict(N=8, M=8, lambdas=[0.003, 0.03]),
}


# the inpainter without the options of the shipped recipe (its defaults): the plain conditional VAE that the
# tests switch single options on in
INPAINT_PLAIN = dict(
    q_view="full",
    q_init_logvar=0.0,
    q_skip=0.0,
    min_logvar=-12.0,
    q_kl_weight=1.0,
    latent_gate=0.0,
    mask_probs=(0.25, 0.35, 0.25, 0.15),
    detail=None,
    detail_blocks=0,
    prefill="jacobi",
)


def inpaint_vae(**kw):
    """A small inpaint-vae: :data:`INPAINT_PLAIN` with ``kw`` on top."""
    from vaekit.registry import create_model

    return create_model("inpaint-vae", **{**INPAINT_PLAIN, **kw})
