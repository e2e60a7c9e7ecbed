"""The one task contract, walked over the task registry: dtype and shape kept, models by name / path / object,
``samples`` the number of draws, ``details`` one result type, ``seed`` and ``device`` everywhere."""

import inspect

import numpy as np
import pytest
import torch
from conftest import inpaint_vae

from vaekit.errors import VaekitError
from vaekit.registry import create_model
from vaekit.tasks import TASKS, get
from vaekit.tasks.common import Result


def smooth(h=32, w=48, c=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)
    img = np.stack([base * (0.8 + 0.1 * k) for k in range(c)], -1) + rng.normal(0, 0.05, (h, w, c))
    return np.clip(img, 0, 1)


def tiny_denoiser(channels):
    torch.manual_seed(0)
    if channels == 3:
        return create_model("denoise-vae-opponent", widths=[8, 8, 16], latent_channels=2).eval()
    return create_model("denoise-vae", channels=channels, widths=[8, 8, 16], latent_channels=2).eval()


def tiny_inpainter():
    torch.manual_seed(0)
    return inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2).eval()


def layouts(c):
    """The same picture as uint8, uint16, float32 and float64, H x W x c (and H x W, H x W x 1 for gray)."""
    f = smooth(c=c)
    out = {
        "uint8": np.round(f * 255).astype(np.uint8),
        "uint16": np.round(f * 65535).astype(np.uint16),
        "float32": f.astype(np.float32),
        "float64": f,
    }
    if c == 1:
        out = {**{k: v[..., 0] for k, v in out.items()}, "uint8-hw1": out["uint8"]}
    return out


def run_task(name, img, **kw):
    mask = np.zeros(img.shape[:2], bool)
    mask[8:20, 10:30] = True
    if name == "denoise":
        return get(name)(img, 20, model=tiny_denoiser(1 if img.ndim == 2 or img.shape[2] == 1 else 3), **kw)
    if name == "inpaint":
        g = img if img.ndim == 3 and img.shape[2] == 3 else None
        return get(name)(g if g is not None else img, mask, model=tiny_inpainter(), **kw)
    if name == "compensate":
        return get(name)(img, method="gray-world", **kw)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["denoise", "inpaint", "compensate"])
@pytest.mark.parametrize("c", [1, 3])
def test_an_image_comes_back_in_its_dtype_and_shape(name, c):
    if name == "inpaint" and c == 1:
        c = 3  # the tiny inpainter is a colour model; gray goes through the shipped one in test_inpaint.py
    for kind, img in layouts(c).items():
        out = run_task(name, img, seed=1, device="cpu")
        assert out.dtype == img.dtype and out.shape == img.shape, (name, kind)
        if np.issubdtype(img.dtype, np.floating):
            assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", ["denoise", "inpaint", "compensate"])
def test_an_alpha_channel_is_handed_back_unchanged(name):
    for kind in ("uint8", "float32"):
        rgb = layouts(3)[kind]
        alpha = np.linspace(0, 1, rgb.shape[1])[None].repeat(rgb.shape[0], 0)
        alpha = np.round(alpha * 255).astype(np.uint8) if kind == "uint8" else alpha.astype(np.float32)
        out = run_task(name, np.dstack([rgb, alpha]), seed=1)
        assert out.dtype == rgb.dtype and out.shape == (*rgb.shape[:2], 4) and np.array_equal(out[..., 3], alpha)
        assert np.array_equal(out[..., :3], run_task(name, rgb, seed=1))  # the colour is what it is without alpha


@pytest.mark.parametrize("name", ["denoise", "inpaint", "compensate"])
def test_a_float_image_in_other_units_is_refused(name):
    img = smooth().astype(np.float32)
    noisy = img + np.random.default_rng(0).normal(0, 1.0, img.shape)  # sigma 255 noise: still [0, 1] units
    assert run_task(name, noisy.astype(np.float32)).shape == img.shape
    with pytest.raises(VaekitError, match="divide a 0..255 image by 255"):
        run_task(name, img * 255)


@pytest.mark.parametrize("name", ["denoise", "inpaint", "compensate"])
def test_a_channels_first_tensor_is_refused_with_the_fix(name):
    img = torch.from_numpy(layouts(3)["float32"])
    assert run_task(name, img).shape == img.shape  # H x W x 3, as numpy
    with pytest.raises(VaekitError, match=r"permute\(1, 2, 0\)"):
        run_task(name, img.permute(2, 0, 1))


def test_batch_tasks_refuse_an_image_that_is_no_batch_of_the_models_input():
    """augment and evaluate take (B, C, H, W) in [0, 1]; a photo raised a matrix-shape error inside the net."""
    from vaekit.tasks.augment import augment
    from vaekit.tasks.generate import evaluate

    m = create_model("hvae", image_shape=(1, 28, 28), hidden1=[16], hidden2=[8], latent_dims=[4, 2]).eval()
    good = np.random.default_rng(0).random((2, 1, 28, 28))
    assert augment(good, 2, model=m).shape == (2, 2, 1, 28, 28)
    assert evaluate(m, good, k=2)["n"] == 2  # numpy as well as tensors
    for f in (lambda x: augment(x, 2, model=m), lambda x: evaluate(m, x, k=2)):
        with pytest.raises(VaekitError, match=r"a batch \(B, 1, 28, 28\) in \[0, 1\]"):
            f(layouts(3)["uint8"])
        with pytest.raises(VaekitError, match="divide 0..255 images by 255"):
            f(good * 255)


@pytest.mark.parametrize("name", ["denoise", "inpaint", "compensate"])
def test_details_give_one_result_type(name):
    img = layouts(3)["uint8"]
    samples = {} if name == "compensate" else {"samples": 3}
    r = run_task(name, img, details=True, **samples)
    assert isinstance(r, Result) and r.image.dtype == np.uint8 and isinstance(r.info, dict)
    assert r.info["method"] and r.info["seconds"] >= 0
    if samples:
        assert len(r.samples) == 3 and all(s.dtype == np.uint8 for s in r.samples) and r.std is not None
        assert len(run_task(name, img, details=True, samples=1).samples) == 0  # 1 is one pass, no draws


def test_samples_mean_the_number_of_draws_everywhere():
    img = layouts(3)["float32"]
    for name in ("denoise", "inpaint"):
        for bad in (0, -1, 1.5):
            with pytest.raises(VaekitError, match="samples"):
                run_task(name, img, samples=bad)


def test_every_task_takes_device_and_the_stochastic_ones_take_seed():
    for name in TASKS:
        params = inspect.signature(get(name)).parameters
        assert "device" in params, name
        if name not in ("compress", "decompress", "interpolate"):  # deterministic: nothing to seed
            assert "seed" in params, name


def test_generate_and_interpolate_take_a_name_a_path_or_a_model(tmp_path):
    from vaekit.pretrained import save_model

    m = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[16], latent_dim=3)
    save_model(m, tmp_path / "run", {"name": "t"})
    a = get("generate")(m, 4, seed=3)
    b = get("generate")(str(tmp_path / "run"), 4, seed=3, device="cpu")
    assert a.shape == (4, 1, 8, 8) and torch.allclose(a, b)
    frames = get("interpolate")(tmp_path / "run", np.zeros((8, 8), np.uint8), np.ones((8, 8), np.float32), steps=3)
    assert frames.shape == (3, 1, 8, 8)


def test_generate_by_shipped_name():
    from vaekit.pretrained import SHIPPED

    if "mnist-vae" not in SHIPPED:
        pytest.skip("mnist-vae not shipped")
    import vaekit

    x = vaekit.generate("mnist-vae", 4)
    assert x.shape == (4, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1


@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_decompress_of_compress_keeps_the_shape(shape, dtype):
    from vaekit.pretrained import SHIPPED

    if "codec-hyperprior" not in SHIPPED:
        pytest.skip("no codec shipped")
    img = smooth(*shape[:2], c=3)
    img = img if len(shape) == 3 else img.mean(-1)
    img = np.round(img * 255).astype(np.uint8) if dtype == np.uint8 else img.astype(np.float32)
    out = get("decompress")(get("compress")(img, 2, device="cpu"), device="cpu")
    assert out.shape == img.shape and out.dtype == np.uint8


def test_degrade_keeps_the_dtype_so_uint8_noise_is_on_the_0_255_scale():
    from vaekit import degrade

    img = layouts(3)["uint8"]
    noisy = degrade.gaussian(img, 10, seed=0)
    assert noisy.dtype == np.uint8 and noisy.shape == img.shape
    sd = float(np.std(noisy.astype(float) - img.astype(float)))
    assert 8 < sd < 11  # 10 grey levels, not 10/255 of one
    f = layouts(3)["float64"]
    assert degrade.gaussian(f, 10, seed=0).dtype == np.float64  # float stays float, not clipped (DnCNN protocol)
