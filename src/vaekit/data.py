"""Data sets: MNIST (idx, checksummed), CIFAR-10 (python batches), image
folders and random patches of natural images.

Nothing here downloads unless :func:`download` is called explicitly; tests
and benchmarks read local files (``--data-dir``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import VaekitError

# Official locations and the SHA-256 of the files as distributed.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # as published on the CIFAR page

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".npy"}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------- MNIST
def read_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a uint8 array.

    With ``expected_sha256`` the file's checksum is verified first and a
    mismatch is a :class:`VaekitError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"missing data file {path}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise VaekitError(
            f"checksum mismatch for {path}: the file is corrupted or not the official one; "
            "delete it and download it again"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise VaekitError(f"cannot read {path}: {e}") from None
    if len(raw) < 4:
        raise VaekitError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise VaekitError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    n = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != n:
        raise VaekitError(f"{path} is truncated: header says {n} values, file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_mnist(data_dir: str | os.PathLike, split: str = "train", verify: bool = True):
    """MNIST as (images uint8 (N, 28, 28), labels int64 (N,)); split 'train' or 'test'."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise VaekitError(f"data directory {data_dir} does not exist; pass --data-dir with the MNIST idx files")
    prefix = {"train": "train", "test": "t10k"}[split]
    files = {}
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte.gz"
        path = data_dir / name
        if not path.exists() and (data_dir / name[:-3]).exists():
            path, sha = data_dir / name[:-3], None  # uncompressed copy: no official checksum to check
        else:
            sha = MNIST_FILES[name] if verify else None
        files[kind] = read_idx(path, sha)
    return files["images-idx3"], files["labels-idx1"].astype(np.int64)


def download_mnist(data_dir: str | os.PathLike) -> None:
    """Fetch the four MNIST files into ``data_dir`` and verify their checksums."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, sha in MNIST_FILES.items():
        dest = data_dir / name
        if dest.exists() and sha256_file(dest) == sha:
            continue
        _fetch_any([m + name for m in MNIST_MIRRORS], dest, sha256=sha)


def _fetch_any(urls, dest: Path, sha256: str | None = None, md5: str | None = None) -> None:
    errors = []
    for url in urls:
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except OSError as e:
            errors.append(f"{url}: {e}")
            tmp.unlink(missing_ok=True)
            continue
        digest = hashlib.md5(tmp.read_bytes()).hexdigest() if md5 else sha256_file(tmp)
        if digest != (md5 or sha256):
            tmp.unlink()
            errors.append(f"{url}: checksum mismatch")
            continue
        os.replace(tmp, dest)
        return
    raise VaekitError(f"could not download {dest.name}: " + "; ".join(errors), exit_code=1)


# ------------------------------------------------------------------- CIFAR-10
def load_cifar10(data_dir: str | os.PathLike, split: str = "train"):
    """CIFAR-10 python batches as (images uint8 (N, 32, 32, 3), labels int64).

    ``data_dir`` is the extracted ``cifar-10-batches-py`` folder (or its parent).
    """
    data_dir = Path(data_dir)
    if (data_dir / "cifar-10-batches-py").is_dir():
        data_dir = data_dir / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = data_dir / name
        if not path.is_file():
            raise VaekitError(f"missing CIFAR-10 batch {path}")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # the official format is a pickle
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
            raise VaekitError(f"{path} is not a CIFAR-10 python batch: {e}") from None
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def download_cifar10(data_dir: str | os.PathLike) -> None:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / "cifar-10-python.tar.gz"
    if not archive.exists():
        _fetch_any([CIFAR10_URL], archive, md5=CIFAR10_MD5)
    with tarfile.open(archive) as tar:
        tar.extractall(data_dir, filter="data")


# ------------------------------------------------------------ torch datasets
class TensorImages(Dataset):
    """In-memory images (N, C, H, W) float in [0, 1], optionally with labels.

    ``__getitems__`` returns a whole batch at once, so a DataLoader with a
    batch sampler costs one indexing operation per batch.  With
    ``binarize=True`` each fetched batch is binarized afresh by Bernoulli
    sampling (dynamic binarization) from the generator given to
    :meth:`set_generator`, so a resumed run sees the same bits.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, binarize: bool = False):
        self.images = images
        self.labels = labels
        self.binarize = binarize
        self.generator: torch.Generator | None = None

    def set_generator(self, g: torch.Generator):
        self.generator = g

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.__getitems__([i])[0][0]

    def __getitems__(self, idx):
        x = self.images[torch.as_tensor(idx)]
        if self.binarize:
            x = torch.bernoulli(x, generator=self.generator)
        return [x] if self.labels is None else [x, self.labels[torch.as_tensor(idx)]]


def write_idx(path, arr: np.ndarray) -> Path:
    """Write a uint8 array as an uncompressed IDX file (for synthetic MNIST-shaped data sets)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    path = Path(path)
    path.write_bytes(
        struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    )
    return path


def write_idx_images(directory, train_x, train_y, test_x, test_y) -> Path:
    """An MNIST-layout folder (uncompressed idx) from (N, 1, 28, 28) images in [0, 1] and labels."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        imgs = (np.asarray(x).reshape(len(x), 28, 28) * 255).round().astype(np.uint8)
        write_idx(d / f"{split}-images-idx3-ubyte", imgs)
        write_idx(d / f"{split}-labels-idx1-ubyte", np.asarray(y).astype(np.uint8))
    return d


def mnist_tensors(data_dir, split="train", verify=True):
    """MNIST as float tensors (N, 1, 28, 28) in [0, 1] and int64 labels."""
    x, y = load_mnist(data_dir, split, verify)
    return torch.from_numpy(x.copy()).float().div_(255.0).unsqueeze(1), torch.from_numpy(y)


def binarize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Stochastic binarization x_b ~ Bernoulli(x) with a fixed seed (test-set protocol)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, sorted); a file is returned as itself."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise VaekitError(f"{root} is neither an image file nor a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(Dataset):
    """Every image under a folder (recursive), as (C, H, W) float tensors.

    ``labels='subfolder'`` gives each image the index of its first-level
    subfolder (folder-per-class layout); ``mode`` is 'L' or 'RGB'.
    """

    def __init__(self, root, mode="RGB", labels: str | None = None, max_pixels=None):
        from .io import read_image

        self._read = read_image
        self.root = Path(root)
        self.files = find_images(self.root)
        if not self.files:
            raise VaekitError(f"no images found under {self.root}")
        self.mode = mode
        self.max_pixels = max_pixels
        self.classes = None
        if labels == "subfolder":
            self.classes = sorted({p.relative_to(self.root).parts[0] for p in self.files if p.parent != self.root})
            self.files = [p for p in self.files if p.parent != self.root]

    def __len__(self):
        return len(self.files)

    def load(self, i) -> torch.Tensor:
        return self._read(self.files[i], mode=self.mode, max_pixels=self.max_pixels)

    def __getitem__(self, i):
        x = self.load(i)
        if self.classes is None:
            return x
        return x, self.classes.index(self.files[i].relative_to(self.root).parts[0])


def split_by_file(files, split_file) -> tuple[list, list]:
    """(train, val) files from a TSV whose first two columns are file name and split.

    Rows whose split is ``val`` validate; every other listed file trains;
    files the TSV does not list are refused (a silent leak into training is
    worse than an error)."""
    split_file = Path(split_file)
    if not split_file.is_file():
        raise VaekitError(f"split file {split_file} does not exist")
    split = {}
    for line in split_file.read_text().splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 2:
            split[cols[0].strip()] = cols[1].strip()
    unknown = [f for f in files if Path(f).name not in split]
    if unknown:
        raise VaekitError(f"{Path(unknown[0]).name} is not listed in {split_file}")
    val = [f for f in files if split[Path(f).name] == "val"]
    train = [f for f in files if split[Path(f).name] != "val"]
    if not val or not train:
        raise VaekitError(f"{split_file} must list both val and training files")
    return train, val


BLOCKY = 1.1  # blockiness from which a source counts as showing JPEG's 8x8 grid (q95 4:4:4 files: about 1.0)


def blockiness(x: torch.Tensor) -> float:
    """How strongly an image (C, H, W) shows JPEG's 8x8 block grid: the mean absolute step between neighbouring
    pixels across the grid's lines over the mean step elsewhere, of the channel mean, horizontally and
    vertically averaged (1.0: no grid; JPEG q75 photos about 1.15-1.45)."""
    y = x.float().mean(0)
    ratios = []
    for a in (y, y.T):
        d = (a[:, 1:] - a[:, :-1]).abs()
        on = (torch.arange(d.shape[1]) % 8) == 7
        inside = d[:, ~on].mean()
        ratios.append(float(d[:, on].mean() / inside) if inside > 0 and on.any() else 1.0)
    return sum(ratios) / 2


class RandomPatches(Dataset):
    """Random ``size`` x ``size`` crops of natural images, for patch training.

    Images are decoded once and kept in memory (uint8; float32 for ``.npy`` arrays, unclipped).  Item ``i`` of epoch
    ``e`` is a crop position drawn from a generator seeded by
    ``(seed, e, i)``, so the data order is reproducible and resumable; random
    horizontal flips when ``flip``.  ``downscale`` k > 1 area-averages each 8-bit source over k x k blocks
    first, so JPEG blocking and sensor noise in the sources average out of clean training targets;
    ``blocky_downscale``, when larger, does so for the sources that show JPEG's block grid (:func:`blockiness`
    from ``BLOCKY``) and keeps clean ones at full size.  Images smaller than a crop are left out with one warning,
    as a user's folder may hold a few thumbnails.
    """

    def __init__(
        self, files, size=64, patches_per_image=16, mode="RGB", seed=0, flip=True, downscale=1, blocky_downscale=1
    ):
        from .io import read_image

        self.size = int(size)
        self.images, small = [], []
        for f in files:
            x = read_image(f, mode=mode)
            if Path(f).suffix.lower() != ".npy":  # 8-bit sources are kept as 8 bits (a quarter of the memory)
                k = downscale
                if blocky_downscale > downscale and blockiness(x) >= BLOCKY:
                    k = blocky_downscale
                if k > 1:
                    x = torch.nn.functional.avg_pool2d(x[None], int(k))[0]
                x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            # float arrays (.npy: e.g. noisy images, whose values run below 0 and above 1 -- the DnCNN protocol
            # does not clip) are kept as they are: an 8-bit copy would clip their noise
            if min(x.shape[-2:]) < self.size:
                small.append(f)
                continue
            self.images.append(x)
        scaled = f" after downscaling by {downscale}" if downscale > 1 else ""
        if blocky_downscale > downscale:
            scaled = " after downscaling"
        if not self.images:
            fixes = [f"{n}=1" for n, v in (("downscale", downscale), ("blocky_downscale", blocky_downscale)) if v > 1]
            fix = " or ".join([*fixes, "a smaller patch_size="])
            raise VaekitError(
                f"no image to cut {self.size}-px patches from: none has both sides that long{scaled} (give {fix})"
            )
        if small:
            warnings.warn(
                f"{len(small)} of {len(files)} images are under {self.size} px on a side{scaled} and are left out "
                f"(the first: {small[0]})",
                stacklevel=2,
            )
        self.patches_per_image = int(patches_per_image)
        self.seed = int(seed)
        self.flip = flip
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.images) * self.patches_per_image

    def __getitem__(self, i):
        img = self.images[i % len(self.images)]
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFFFFFF)
        h, w = img.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.size + 1, (1,), generator=g))
        crop = img[:, top : top + self.size, left : left + self.size]
        if self.flip and bool(torch.randint(0, 2, (1,), generator=g)):
            crop = crop.flip(-1)
        return crop.float() / 255.0 if crop.dtype == torch.uint8 else crop.clone()


def load_eval_images(model, data_dir, split="test", limit=None, seed=0):
    """The evaluation images for ``model``'s data kind, as the model sees them (MNIST models trained on
    binarized data get a seeded binarization), and their labels: (images, labels)."""
    card = getattr(model, "card", {})
    kind = card.get("data", {}).get("kind", "mnist")
    if kind == "mnist":
        x, y = mnist_tensors(data_dir, split)
    elif kind == "cifar10":
        xn, y = load_cifar10(data_dir, split)
        x = torch.from_numpy(xn).permute(0, 3, 1, 2).float().div(255.0)
    else:
        raise VaekitError(f"eval supports models trained on mnist or cifar10, not {kind!r}")
    if limit:
        x, y = x[:limit], y[:limit]
    if card.get("data", {}).get("binarize"):
        x = binarize(x, seed)
    return x, torch.as_tensor(y).long()
