import pickle

import numpy as np
import pytest
import torch
from conftest import MNIST_DIR, write_idx
from PIL import Image

from vaekit import data as vd
from vaekit.errors import VaekitError


def test_idx_roundtrip_checksum_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr, compress=True)
    assert np.array_equal(vd.read_idx(tmp_path / "a.gz"), arr)
    good = vd.sha256_file(tmp_path / "a.gz")
    assert np.array_equal(vd.read_idx(tmp_path / "a.gz", good), arr)
    with pytest.raises(VaekitError, match="checksum mismatch"):
        vd.read_idx(tmp_path / "a.gz", "0" * 64)
    write_idx(tmp_path / "b", arr)
    (tmp_path / "b").write_bytes((tmp_path / "b").read_bytes()[:-3])
    with pytest.raises(VaekitError, match="truncated"):
        vd.read_idx(tmp_path / "b")


def test_corrupted_official_file_is_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2), compress=True)
    with pytest.raises(VaekitError, match="checksum mismatch"):
        vd.load_mnist(tmp_path)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="../shared/data/mnist not present")
def test_real_mnist_with_checksums():
    x, y = vd.load_mnist(MNIST_DIR, "test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,) and set(np.unique(y)) == set(range(10))


def test_binarize_is_seeded():
    x = torch.rand(10, 1, 5, 5)
    a, b = vd.binarize(x, 7), vd.binarize(x, 7)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, vd.binarize(x, 8))


def test_tensor_images_dynamic_binarization():
    ds = vd.TensorImages(torch.full((20, 1, 2, 2), 0.5), binarize=True)
    ds.set_generator(torch.Generator().manual_seed(1))
    a = ds.__getitems__(list(range(20)))[0]
    ds.set_generator(torch.Generator().manual_seed(1))
    assert torch.equal(a, ds.__getitems__(list(range(20)))[0])
    assert 0 < a.mean() < 1


def test_cifar_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}, f)
    x, y = vd.load_cifar10(tmp_path, "train")
    assert x.shape == (20, 32, 32, 3) and y.tolist()[:4] == [1, 2, 3, 4]
    (d / "test_batch").write_bytes(b"garbage")
    with pytest.raises(VaekitError, match="test_batch"):
        vd.load_cifar10(tmp_path, "test")


def test_image_folder_and_patches(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls / "deep").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                tmp_path / cls / "deep" / f"{i}.png"
            )
    (tmp_path / "cats" / "notes.txt").write_text("skip me")
    ds = vd.ImageFolder(tmp_path, labels="subfolder")
    assert len(ds) == 4 and ds.classes == ["cats", "dogs"]
    x, label = ds[3]
    assert x.shape == (3, 40, 50) and label == 1
    p = vd.RandomPatches(ds.files, size=16, patches_per_image=3, seed=5)
    assert len(p) == 12 and p[0].shape == (3, 16, 16)
    assert torch.equal(p[4], p[4])
    p.set_epoch(1)
    q = vd.RandomPatches(ds.files, size=16, patches_per_image=3, seed=5)
    q.set_epoch(1)
    assert torch.equal(p[4], q[4])
    with pytest.raises(VaekitError, match="none has both sides that long"):
        vd.RandomPatches(ds.files, size=64)
    Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.warns(UserWarning, match="4 of 5 images are under 64 px"):  # thumbnails are left out, not fatal
        big = vd.RandomPatches([*ds.files, tmp_path / "big.png"], size=64, patches_per_image=2)
    assert len(big) == 2 and big[1].shape == (3, 64, 64)


def test_patches_of_float_arrays_keep_their_noise_unclipped(tmp_path):
    """Noisy .npy images (values below 0 and above 1, as the DnCNN protocol leaves them) reach training as
    they are: an 8-bit copy would clip them -- or, cast from negative floats, wrap them round to white."""
    rng = np.random.default_rng(1)
    y = (0.5 + rng.normal(0, 0.4, (32, 32))).astype(np.float32)
    assert (y < 0).any() and (y > 1).any()
    np.save(tmp_path / "a.npy", y)
    p = vd.RandomPatches([tmp_path / "a.npy"], size=32, patches_per_image=4, mode="L", seed=0, flip=False)
    assert p[0].dtype == torch.float32 and torch.equal(p[0][0], torch.from_numpy(y))
    p[0].zero_()  # items are copies
    assert torch.equal(p[0][0], torch.from_numpy(y))


def test_blocky_sources_are_downscaled_and_clean_ones_kept(tmp_path):
    """A JPEG q50 shows the 8x8 grid and a lossless copy does not; with blocky_downscale=2 only the blocky source
    is area-halved, so a codec or denoiser trains on clean targets at full size where it can."""
    from skimage import data

    img = data.chelsea()  # 300 x 451, scikit-image's freely licensed sample
    Image.fromarray(img).save(tmp_path / "blocky.jpg", quality=50)
    Image.fromarray(img).save(tmp_path / "clean.png")
    as_tensor = lambda f: torch.from_numpy(np.asarray(Image.open(f))).permute(2, 0, 1).float() / 255  # noqa: E731
    assert vd.blockiness(as_tensor(tmp_path / "blocky.jpg")) > 1.3 > vd.BLOCKY
    assert abs(vd.blockiness(as_tensor(tmp_path / "clean.png")) - 1) < 0.02
    files = [tmp_path / "blocky.jpg", tmp_path / "clean.png"]
    p = vd.RandomPatches(files, size=64, patches_per_image=1, blocky_downscale=2)
    assert [tuple(x.shape[-2:]) for x in p.images] == [(150, 225), (300, 451)]
    assert [tuple(x.shape[-2:]) for x in vd.RandomPatches(files, size=64).images] == [(300, 451)] * 2
    with pytest.warns(UserWarning, match="1 of 2 images are under 200 px on a side after downscaling"):
        vd.RandomPatches(files, size=200, blocky_downscale=2)


def test_split_file_separates_validation_and_refuses_unlisted(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "SPLITS.tsv").write_text("file\tsplit\nA\nb.png\tval\na.png\ttrain\nc.png\ttest\n".replace("A\n", ""))
    files = vd.find_images(tmp_path)
    train, val = vd.split_by_file(files, tmp_path / "SPLITS.tsv")
    assert [f.name for f in train] == ["a.png", "c.png"] and [f.name for f in val] == ["b.png"]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(VaekitError, match="d.png is not listed"):
        vd.split_by_file(vd.find_images(tmp_path), tmp_path / "SPLITS.tsv")
    with pytest.raises(VaekitError, match="does not exist"):
        vd.split_by_file(files, tmp_path / "nope.tsv")
