import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

from vaekit import degrade
from vaekit.bench.common import read_results
from vaekit.cli import main
from vaekit.errors import VaekitError


def smooth_image(h=96, w=80, c=None, seed=0):
    """A rendered test picture: gradients, a disc and stripes (ours to ship)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.3 + 0.4 * xx + 0.2 * np.sin(6 * yy)
    img[(yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.05] = 0.85
    img[:, (np.arange(w) // 6) % 2 == 0] *= 0.9
    img = np.clip(img, 0, 1)
    if c:
        img = np.stack([img, img[::-1], 1 - img], -1)
    return img


def test_gaussian_noise_is_seeded_unclipped_and_has_its_level():
    x = smooth_image(128, 128)
    a, b = degrade.gaussian(x, 25, seed=3), degrade.gaussian(x, 25, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, degrade.gaussian(x, 25, seed=4))
    assert degrade.gaussian(np.zeros((64, 64)), 25).min() < 0  # not clipped (the DnCNN protocol)
    assert abs(np.std(a - x) * 255 - 25) < 0.5
    with pytest.raises(VaekitError):
        degrade.gaussian(x, 300)


def test_poisson_and_salt_pepper():
    x = np.full((200, 200), 0.5)
    p = degrade.poisson(x, 30, seed=0)
    assert abs(p.mean() - 0.5) < 0.01 and abs(p.var() - 0.5 / 30) < 0.002
    rgb = smooth_image(100, 100, c=3)
    sp = degrade.salt_pepper(rgb, 0.1, seed=1)
    hit = np.any(sp != rgb, axis=-1)
    assert 0.08 < hit.mean() < 0.12
    assert np.all(np.isin(sp[hit], (0.0, 1.0)))  # the same positions in every channel, set to 0 or 1


def test_sigma_estimator_is_close_on_a_smooth_image():
    x = smooth_image(256, 256)
    for s in (10, 25, 50):
        est = degrade.estimate_sigma(degrade.gaussian(x, s, seed=s))
        assert abs(est - s) < 0.1 * s + 1.5, (s, est)


def test_sigma_estimator_reads_clipped_noise_even_in_dark_images():
    """Clipping cuts the noise short near black and white: the plain MAD read 40.3 for sigma 50 on the astronaut,
    and reading only where the noise stays inside, 34.3 on her darkened to a fifth, where little does."""
    from skimage import data

    for dark in (1.0, 0.2):
        x = data.astronaut() / 255.0 * dark
        for s in (25, 50):
            y = degrade.add_noise(x, "gaussian", sigma=s, seed=s)
            y8 = np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)  # as a file holds it
            assert abs(degrade.estimate_sigma(y8) - s) < 0.06 * s, (dark, s, degrade.estimate_sigma(y8))
            assert abs(degrade.estimate_sigma(y) - s) < 0.04 * s, s  # unclipped float: every coefficient is read
    big = np.tile(data.camera() / 255.0 * 0.3, (3, 2))  # 1.5 MP: the level is read from a subset of coefficients
    y8 = np.round(np.clip(degrade.add_noise(big, "gaussian", sigma=50, seed=0), 0, 1) * 255).astype(np.uint8)
    assert y8.size // 4 > degrade.CLIP_SAMPLE and abs(degrade.estimate_sigma(y8) - 50) < 3


def test_correlated_camera_noise_gets_a_higher_level_and_white_noise_keeps_its_own():
    x = smooth_image(192, 192)
    rgb = np.stack([x, x[::-1], x.T], axis=2).astype(np.float32)
    rng = np.random.default_rng(3)
    white = np.clip(rgb + rng.normal(0, 8 / 255, rgb.shape), 0, 1)
    w, r = degrade.noise_correlation(white)
    assert r < 1.6 and abs(degrade.estimate_sigma(white) - w) < 1e-9  # white noise: the MAD level itself
    cam = degrade.camera(rgb, seed=0, photons=200, read=1, quality=85)  # demosaicked sensor noise, JPEG
    w, r = degrade.noise_correlation(cam)
    assert r > 2.5 and degrade.estimate_sigma(cam) > 1.5 * w
    assert degrade.estimate_sigma(cam, correlated=False) == w


def test_camera_files_are_seeded_correlated_noise_around_the_reference():
    x = smooth_image(128, 160)
    rgb = (np.stack([x, x[::-1], 1 - x], axis=2) * 255).round().astype(np.uint8)
    a, b = degrade.camera(rgb, seed=4), degrade.camera(rgb, seed=4)
    assert a.dtype == np.uint8 and a.shape == rgb.shape and np.array_equal(a, b)
    assert not np.array_equal(a, degrade.camera(rgb, seed=5))
    noise = a.astype(float) - rgb
    assert abs(noise.mean()) < 1.0 and noise.std() > 1.0  # zero-mean noise; the reference keeps its detail
    # neighbouring pixels' noise is correlated (the mosaic), and so is the noise across channels
    n = degrade.camera(np.full((128, 128, 3), 0.5), seed=1, photons=100, read=0, quality=100) - 0.5
    assert np.corrcoef(n[:, :-1, 1].ravel(), n[:, 1:, 1].ravel())[0, 1] > 0.2
    assert np.corrcoef(n[..., 0].ravel(), n[..., 1].ravel())[0, 1] > 0.2
    gray = degrade.camera(x, seed=0)
    assert gray.shape == x.shape and gray.dtype == x.dtype
    with pytest.raises(VaekitError):
        degrade.camera(x, photons=0)


def test_level_shape_follows_shot_noise_and_stays_flat_for_white_noise():
    x = np.tile(np.linspace(0.05, 0.95, 192), (192, 1))
    rgb = np.stack([x, x, x], axis=2)
    rng = np.random.default_rng(0)
    white = degrade.level_shape(rgb + rng.normal(0, 10 / 255, rgb.shape))
    assert white.shape == x.shape and abs(np.sqrt(np.mean(white**2)) - 1) < 1e-6 and white.std() < 0.1
    shot = rgb + rng.normal(0, 1, rgb.shape) * np.sqrt(0.004 * rgb)  # Poisson-like: variance grows with the signal
    m = degrade.level_shape(shot)
    assert np.corrcoef(m.ravel(), x.ravel())[0, 1] > 0.9 and m[:, -8:].mean() > 2 * m[:, :8].mean()
    assert abs(np.sqrt(np.mean(m**2)) - 1) < 1e-6  # the blind level is spread, not changed
    assert np.all(degrade.level_shape(rgb[:16, :16]) == 1)  # too few blocks to fit: flat
    tiny = rgb[:5, :7] + rng.normal(0, 10 / 255, (5, 7, 3))  # smaller than a block: the wavelet level alone
    assert degrade.estimate_sigma(tiny) == degrade.estimate_sigma(tiny, correlated=False)
    assert np.all(degrade.level_shape(tiny) == 1)


def test_a_blind_level_above_the_scale_is_held_at_its_top():
    """A binary pattern at the finest scale measures above 255: the level maps the model reads stay on its scale."""
    from vaekit.tasks.denoise import for_noise

    y, x = np.mgrid[:64, :80]
    bits = ((y + x) % 2).astype(np.float32)  # a 1-bit checkerboard
    assert degrade.blind_level(bits)[0] == degrade.estimate_sigma(bits) == 255.0
    assert degrade.noise_correlation(bits)[0] > 255  # what the finest scale measures
    seen = []
    est, s, path = for_noise(lambda a, m: seen.append(m) or a, bits, level_map=True)
    assert path == "blind" and s == 255.0 and seen[0].shape == bits.shape and seen[0].max() <= 255.0


def test_blind_correlated_noise_is_denoised_on_pixel_shuffled_sub_images():
    """Camera noise: four half-size passes at the sub-images' level, then one light pass; white noise: one pass."""
    from vaekit.tasks.denoise import SHUFFLE_REFINE, for_noise

    x = smooth_image(130, 97)  # odd width: sub-images of two sizes
    rgb = np.stack([x, x[::-1], 1 - x], axis=2)
    calls = []

    def record(a, s):
        calls.append((a.shape, s))
        return a

    cam = degrade.camera(rgb, seed=0, photons=200, read=1, quality=85)
    est, s, path = for_noise(record, cam, level_map=True)
    shapes = sorted(c[0][:2] for c in calls[:4])
    assert len(calls) == 5 and shapes == [(65, 48), (65, 48), (65, 49), (65, 49)]
    assert all(np.ndim(c[1]) == 2 and c[1].shape == c[0][:2] for c in calls[:4])  # level maps, per sub-image
    assert calls[4][0] == cam.shape and calls[4][1] == pytest.approx(SHUFFLE_REFINE * degrade.estimate_sigma(cam))
    assert np.allclose(est, cam, atol=1e-6) and s == degrade.estimate_sigma(
        cam
    )  # reassembled in place; the blind level
    assert path == "shuffled"
    calls.clear()
    assert for_noise(record, cam)[2] == "blind"  # a denoiser of one level: one pass
    assert len(calls) == 1 and calls[0][1] == pytest.approx(degrade.estimate_sigma(cam))
    calls.clear()
    for_noise(record, degrade.gaussian(rgb, 10, seed=1), level_map=True)
    assert len(calls) == 1 and calls[0][0] == rgb.shape
    calls.clear()
    for_noise(record, cam[..., 1], level_map=True)  # gray: one pass whatever the correlation
    assert len(calls) == 1
    calls.clear()
    from scipy.ndimage import uniform_filter

    tiny = np.clip(0.5 + uniform_filter(np.random.default_rng(0).normal(0, 0.1, (16, 9, 3)), (3, 3, 1)), 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sub-images 8 x 4 and 8 x 5: no complaint from the estimators
        for_noise(record, tiny, level_map=True)
    assert len(calls) == 5 and calls[0][0] == (8, 5, 3)


def test_a_level_map_is_read_per_pixel():
    """A constant map is the level itself; a map that varies denoises each part at its own level."""
    from vaekit.registry import create_model
    from vaekit.tasks.denoise import vae_denoise

    torch.manual_seed(0)
    for m in (tiny_denoiser(), create_model("denoise-vae-opponent", widths=[8, 8, 16], latent_channels=2).eval()):
        torch.nn.init.normal_(m.out.weight, std=0.05)  # an output that depends on the level, trained or not
        y = degrade.gaussian(smooth_image(40, 56, c=m.channels), 20, seed=1)
        one = vae_denoise(m, y, 20.0)[0]
        assert np.allclose(vae_denoise(m, y, np.full((40, 56), 20.0))[0], one, atol=1e-5)
        assert np.allclose(vae_denoise(m, y, np.full((40, 56), 20.0), tile=32, overlap=8)[0], one, atol=0.02)
        half = np.full((40, 56), 20.0)
        half[:, 28:] = 40.0
        two = vae_denoise(m, y, half)[0]
        assert not np.allclose(two, one) and np.abs(two[:, :20] - one[:, :20]).mean() < np.abs(two - one).mean()
        with pytest.raises(VaekitError, match="map"):
            vae_denoise(m, y, np.full((8, 8), 20.0))


def test_anscombe_round_trip_is_nearly_unbiased():
    from vaekit.tasks.denoise import for_noise

    x = np.full((300, 300), 0.4)
    y = degrade.poisson(x, 30, seed=2)
    # the ideal Gaussian denoiser for a constant image: the mean in the transformed domain
    est, s, path = for_noise(lambda a, sig: np.full_like(a, a.mean()), y, "poisson", peak=30)
    assert abs(est.mean() - 0.4) < 0.005
    assert 20 < s < 26  # unit noise in the stabilised domain, on the 0-255 scale


def test_impulse_fill_removes_salt_and_pepper():
    from vaekit import baselines
    from vaekit.metrics import psnr_u8
    from vaekit.tasks.denoise import impulse_fill

    x = smooth_image(96, 96)
    y = degrade.salt_pepper(x, 0.1, seed=0)
    filled, hit = impulse_fill(y)
    assert hit.mean() > 0.08
    assert psnr_u8(filled, x) > psnr_u8(y, x) + 15
    assert psnr_u8(baselines.denoise.median(y), x) > psnr_u8(y, x) + 10


def test_classical_baselines_improve_a_noisy_image():
    from vaekit import baselines
    from vaekit.metrics import psnr_u8

    x = smooth_image(96, 96)
    y = degrade.gaussian(x, 25, seed=0)
    for m in ("nlm", "tv", "wavelet", "gaussian", "opencv-nlm"):
        out = baselines.get("denoise", m)(y, 25)
        assert out.shape == x.shape
        assert psnr_u8(out, x) > psnr_u8(y, x) + 3, m
    with pytest.raises(VaekitError):
        baselines.get("denoise", "nope")


def test_tiny_and_constant_images_are_denoised_by_every_method():
    from vaekit import baselines
    from vaekit.tasks.denoise import denoise

    rng = np.random.default_rng(0)
    methods = ["vae"] + [m for m in baselines.BASELINES["denoise"] if m != "bm3d" or importlib.util.find_spec("bm3d")]
    for shape in ((1, 1), (3, 5, 3), (7, 30), (8, 8, 3)):  # BM3D alone crashed on (8, 8, 3) and failed under 8 px
        y = (rng.random(shape) * 255).astype(np.uint8)
        for m in methods:
            out = denoise(y, 25, method=m)
            assert out.shape == y.shape and out.dtype == np.uint8, (shape, m)
    for black in (np.zeros((64, 64, 3), np.uint8), np.zeros((1, 1), np.uint8)):  # no detail: level 0, not NaN
        r = denoise(black, details=True)
        assert r.info["sigma"] == 0 and np.array_equal(r.image, black)
    big = rng.random((20, 24))
    assert np.array_equal(denoise(big, 25, method="median"), baselines.get("denoise", "median")(big, 25).clip(0, 1))


def test_bm3d_runs_on_the_thread_budget_not_on_every_core(monkeypatch):
    """The bm3d package runs on every core unless its profile says otherwise; the baseline gives it torch's
    thread count (what ``--threads`` sets), so that timings "at one thread" are."""
    import sys
    import types

    from vaekit import baselines

    seen = []

    class Profile:
        num_threads = 0

    def run(z, sigma, profile):
        seen.append((z.ndim, profile.num_threads))
        return z

    fake = types.SimpleNamespace(BM3DProfile=Profile, bm3d=run, bm3d_rgb=run)
    monkeypatch.setitem(sys.modules, "bm3d", fake)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    bm3d = baselines.get("denoise", "bm3d")
    bm3d(np.zeros((8, 8)), 25)
    bm3d(np.zeros((8, 8, 3)), 25)
    bm3d(np.zeros((8, 8)), 25, threads=3)
    assert seen == [(2, 1), (3, 1), (2, 3)]


def tiny_denoiser(channels=1, seed=0):
    from vaekit import create_model

    torch.manual_seed(seed)
    m = create_model("denoise-vae", channels=channels, widths=[8, 8, 16], latent_channels=2, free_bits=0.0)
    torch.nn.init.normal_(m.out.weight, std=0.02)  # not the identity the zero init starts from
    return m.eval()


def test_denoising_vae_objective_and_draws():
    m = tiny_denoiser()
    m.train()
    x = torch.rand(3, 1, 32, 32)
    out = m(x)
    loss = m.loss(x, out)
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"]) and float(loss["kl"]) >= 0
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    y = x + 0.1 * torch.randn_like(x)
    mean, std, draws = m.denoise(y, 25.0, samples=4, generator=torch.Generator().manual_seed(0))
    assert len(draws) == 4 and mean.shape == y.shape and (std > 0).all()
    assert torch.allclose(mean, torch.stack(draws).mean(0), atol=1e-6)
    with pytest.raises(ValueError):
        m.denoise(torch.rand(1, 1, 30, 32), 25.0)  # not a multiple of 8: vae_denoise pads, the model refuses


def test_a_tiny_denoiser_learns_to_denoise():
    """A few hundred steps on one picture: the one-pass estimate beats the noisy input."""
    from vaekit.metrics import psnr_u8
    from vaekit.tasks.denoise import vae_denoise

    torch.manual_seed(0)
    m = tiny_denoiser()
    m.sigma_range = (20.0, 30.0)
    x = torch.from_numpy(smooth_image(64, 64)).float()[None, None]
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    m.train()
    for i in range(150):
        crops = torch.cat([x[..., a : a + 32, b : b + 32] for a, b in torch.randint(0, 33, (8, 2)).tolist()])
        loss = m.loss(crops, m(crops))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    clean = smooth_image(64, 64)
    y = degrade.gaussian(clean, 25, seed=1)
    est = vae_denoise(m, y, 25)[0]
    assert psnr_u8(est, clean) > psnr_u8(y, clean) + 2


def test_tiles_are_blended_without_seams_and_any_size_works():
    from vaekit.tasks.denoise import vae_denoise

    m = tiny_denoiser()
    y = degrade.gaussian(smooth_image(150, 133), 25, seed=0)
    whole = vae_denoise(m, y, 25, tile=4096)[0]
    tiled = vae_denoise(m, y, 25, tile=64, overlap=16)[0]
    assert whole.shape == y.shape == tiled.shape
    assert np.abs(whole - tiled).mean() < 0.01
    tiny = vae_denoise(m, y[:5, :7], 25)[0]  # smaller than the stride: padded, cropped
    assert tiny.shape == (5, 7)


def test_even_tiles_cover_with_the_fewest_equal_tiles():
    from vaekit.tasks.common import even_tiles

    assert even_tiles(600, 768, 32, 8) == (600, [0])
    assert even_tiles(800, 768, 32, 8) == (416, [0, 384])  # not two 768 tiles, 1536 px for 800
    for n in (769, 1000, 1500, 4321):
        size, starts = even_tiles(n, 768, 32, 8)
        assert size <= 768 and size % 8 == 0 and starts[0] == 0 and starts[-1] + size == n
        assert len(starts) == -(-(n - 32) // (768 - 32))  # the fewest tiles that can overlap by 32
        assert all(b - a <= size - 32 for a, b in zip(starts, starts[1:]))  # each pair overlaps by >= 32


def test_cli_says_which_path_correlated_noise_took(tmp_path, capsys):
    """Blind camera-like noise in colour: the shipped colour model's camera branch, a model without one (the gray
    model across opponent channels) the pixel-shuffled passes; white noise takes neither."""
    from vaekit.io import write_image

    x = smooth_image(128, 160)
    rgb = np.stack([x, x[::-1], 1 - x], axis=2)
    write_image(tmp_path / "cam.png", degrade.camera(rgb, seed=0, photons=200, read=1, quality=85))
    write_image(tmp_path / "white.png", degrade.gaussian(rgb, 10, seed=1))
    for name, model, path in (
        ("cam", [], "camera branch"),
        ("cam", ["--model", "denoise-gray"], "pixel-shuffled"),
        ("white", [], None),
    ):
        assert main(["denoise", str(tmp_path / f"{name}.png"), "-o", str(tmp_path / "out.png"), *model]) == 0
        out = capsys.readouterr().out
        assert "(estimated)" in out
        for said in ("camera branch", "pixel-shuffled"):
            assert (said in out) == (said == path), out


def test_denoise_api_with_samples_and_classical(tmp_path):
    import vaekit

    m = tiny_denoiser(3)
    y = degrade.gaussian(smooth_image(40, 48, c=3), 15, seed=0)
    r = vaekit.denoise(y, 15, model=m, samples=3, details=True)
    assert r.image.shape == y.shape and len(r.samples) == 3 and r.std.shape == y.shape
    assert r.sigma == 15 and not r.sigma_estimated
    b = vaekit.denoise(y, method="tv", details=True)
    assert b.sigma_estimated and 8 < b.sigma < 22
    with pytest.raises(VaekitError):
        vaekit.denoise(y[..., 0], 15, model=m)  # a colour model on a gray image
    with pytest.raises(VaekitError):
        vaekit.denoise(y, 15, peak=30)  # peak without poisson


def test_strength_takes_out_that_share_of_the_noise(tmp_path):
    """strength s gives image + s * (estimate - image): 0 the input, 1 the estimate; the draws and std follow."""
    import vaekit

    m = tiny_denoiser(3)
    y = degrade.gaussian(smooth_image(40, 48, c=3), 15, seed=0)
    full = vaekit.denoise(y, 15, model=m, samples=3, details=True, seed=1)
    half = vaekit.denoise(y, 15, model=m, samples=3, details=True, seed=1, strength=0.5)
    expected = np.clip(y + 0.5 * (full.image - y), 0, 1)
    assert np.abs(half.image - expected).max() < 1e-6 and half.info["strength"] == 0.5
    assert np.abs(half.samples[1] - np.clip(y + 0.5 * (full.samples[1] - y), 0, 1)).max() < 1e-6
    assert np.allclose(half.std, 0.5 * full.std, atol=1e-6)
    u8 = np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(vaekit.denoise(u8, 15, model=m, strength=0), u8)  # nothing taken out
    assert np.array_equal(vaekit.denoise(u8, 15, model=m, strength=1.0), vaekit.denoise(u8, 15, model=m))
    for bad in (-0.1, 1.5, "a", True, (0.5,), (0.5, 2)):
        with pytest.raises(VaekitError, match="strength must be a number from 0"):
            vaekit.denoise(y, 15, model=m, strength=bad)
    from vaekit.models.denoiser import OPPONENT

    luma_only = vaekit.denoise(y, 15, model=m, strength=(1, 0))  # the luminance noise out, the colour noise kept
    inside = ((luma_only > 0) & (luma_only < 1) & (full.image > 0) & (full.image < 1)).all(axis=2)  # not clipped
    assert inside.mean() > 0.9
    assert np.allclose((luma_only @ OPPONENT[0])[inside], (full.image @ OPPONENT[0])[inside], atol=1e-5)
    assert np.allclose((luma_only @ OPPONENT[1:].T)[inside], (y @ OPPONENT[1:].T)[inside], atol=1e-5)
    np.save(tmp_path / "y.npy", u8)
    out = tmp_path / "out.png"
    assert main(["denoise", str(tmp_path / "y.npy"), "-o", str(out), "--sigma", "15", "--strength", "0"]) == 0
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), u8)  # the CLI's flag is the same knob
    assert main(["denoise", str(tmp_path / "y.npy"), "-o", str(out), "--sigma", "15", "--strength", "0,0"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), u8)
    assert main(["denoise", str(tmp_path / "y.npy"), "-o", str(out), "--strength", "0.5,x"]) == 2


@pytest.fixture()
def tiny_run(tmp_path):
    from vaekit.pretrained import save_model

    m = tiny_denoiser()
    save_model(
        m,
        tmp_path / "run",
        {
            "name": "tiny",
            "arch": "denoise-vae",
            "arch_args": {"channels": 1, "widths": [8, 8, 16], "latent_channels": 2},
        },
    )
    return tmp_path / "run"


def test_cli_denoise_samples_folder_and_bad_input(tmp_path, tiny_run, capsys):
    from vaekit.io import write_image

    clean = smooth_image(40, 40)
    write_image(tmp_path / "in" / "a.png", degrade.gaussian(clean, 25, seed=0))
    write_image(tmp_path / "in" / "sub" / "b.png", degrade.gaussian(clean, 25, seed=1))
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "in" / "a.png"),
                "-o",
                str(tmp_path / "s"),
                "--samples",
                "3",
                "--model",
                str(tiny_run),
                "--sigma",
                "25",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["mean.png", "sample_000.png", "sample_001.png", "sample_002.png", "samples.json", "std.png"]
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert meta["N"] == 3 and meta["std_scale"] > 0 and meta["seed"] == 0
    assert (
        main(["denoise", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_run), "--quiet"]) == 0
    )
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "sub" / "b.png").is_file()
    np.save(tmp_path / "map.npy", np.full((40, 40), 25.0))
    np.save(tmp_path / "small.npy", np.full((8, 8), 25.0))
    np.save(tmp_path / "hot.npy", np.full((40, 40), 300.0))
    one = [str(tmp_path / "in" / "a.png"), "--model", str(tiny_run)]
    assert main(["denoise", *one, "-o", str(tmp_path / "m.png"), "--sigma-map", str(tmp_path / "map.npy")]) == 0
    assert "sigma 25.00" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    bad = [["--sigma", "300"], ["--peak", "30"], ["--max-pixels", "100"], ["--samples", "-1"], ["--samples", "0"]]
    bad += [["--noise", "poisson", "--peak", p] for p in ("0", "-3")] + [["--noise", "salt-pepper", "--amount", "2"]]
    bad += [["--sigma-map", str(tmp_path / f)] for f in ("small.npy", "hot.npy", "none.npy")]
    bad += [
        ["--sigma-map", str(tmp_path / "map.npy"), "--method", "tv"],
        ["--sigma-map", str(tmp_path / "map.npy"), "--sigma", "5"],
    ]
    for extra in bad:
        assert (
            main(
                [
                    "denoise",
                    str(tmp_path / "in" / "a.png"),
                    "-o",
                    str(tmp_path / "x.png"),
                    "--model",
                    str(tiny_run),
                    *extra,
                ]
            )
            == 2
        ), extra
    assert main(["denoise", str(tmp_path / "empty"), "-o", str(tmp_path / "y")]) == 2
    before = (tmp_path / "in" / "a.png").read_bytes()
    for inp, out in (("in/a.png", "in/a.png"), ("in", "in")):  # never over its own input
        assert main(["denoise", str(tmp_path / inp), "-o", str(tmp_path / out), "--model", str(tiny_run)]) == 2
    assert (tmp_path / "in" / "a.png").read_bytes() == before
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("vaekit: error:") == 16 and err.count("overwrite its input") == 2
    assert not (tmp_path / "x.png").exists()


def test_bench_noise_conditions_are_parsed_or_refused_in_one_line():
    from vaekit.bench.denoise import parse_conditions

    conds = parse_conditions("25c", "poisson30,sp0.1,camera")
    assert [c["tag"] for c in conds] == ["sigma25-clipped", "poisson30", "sp0.1", "camera"]
    assert conds[1]["peak"] == 30 and conds[2]["amount"] == 0.1
    for bad in ("poisson0", "poisson-3", "sp2", "poissonx", "spx", "gauss"):  # poissonx raised a ValueError
        with pytest.raises(VaekitError):
            parse_conditions("", bad)


def test_bench_denoise_measures_a_folder_of_ones_own_images(tmp_path, capsys):
    """A user's clean photos under --data-root are a set: colour unless every image is gray."""
    from PIL import Image

    from vaekit.io import write_image

    (tmp_path / "data" / "scans").mkdir(parents=True)
    for i in range(2):
        write_image(tmp_path / "data" / "mine" / f"{i}.png", smooth_image(40, 48, c=3))
        Image.fromarray((smooth_image(40, 48) * 255).astype(np.uint8)).save(tmp_path / "data" / "scans" / f"{i}.jpg")
    argv = ["bench", "denoise", "--data-root", str(tmp_path / "data"), "--sigmas", "25", "--methods", "gaussian"]
    assert main([*argv, "--sets", "mine,scans", "-o", str(tmp_path / "res"), "--quiet"]) == 0
    mine = json.loads((tmp_path / "res" / "denoise-mine.json").read_text())
    scans = json.loads((tmp_path / "res" / "denoise-scans.json").read_text())
    assert mine["n_images"] == scans["n_images"] == 2 and (mine["mode"], scans["mode"]) == ("RGB", "L")
    assert mine["summary"]["sigma25"]["gaussian"]["psnr"] > mine["summary"]["sigma25"]["noisy"]["psnr"]
    assert main([*argv, "--sets", "nowhere", "-o", str(tmp_path / "res")]) == 2
    assert "or a folder of clean images under" in capsys.readouterr().err


def test_bench_denoise_tiny(tmp_path, tiny_run):
    from vaekit.io import write_image

    for i in range(2):
        write_image(tmp_path / "data" / "set12" / f"{i:02d}.png", smooth_image(48, 40 + 8 * i))
    assert (
        main(
            [
                "bench",
                "denoise",
                "--data-root",
                str(tmp_path / "data"),
                "--sets",
                "set12",
                "--sigmas",
                "25",
                "--noises",
                "sp0.1",
                "--methods",
                "vae,vae-blind,tv,median",
                "--model-gray",
                str(tiny_run),
                "-o",
                str(tmp_path / "res"),
                "--quiet",
            ]
        )
        == 0
    )
    res = read_results(tmp_path / "res" / "denoise-set12.json")
    s = res["summary"]
    assert set(s) == {"sigma25", "sp0.1"}
    assert "median" in s["sp0.1"] and "median" not in s["sigma25"]
    assert s["sigma25"]["tv"]["psnr"] > 25 and "sigma_estimator" in s["sigma25"]
    assert len({r["noisy_sha256"] for r in res["per_image"]}) == 4
    psnr = res["per_image"][0]["tv"]["psnr"]
    assert psnr == float(f"{psnr:.6g}")  # per-image figures are stored to 6 significant digits
    assert (tmp_path / "res" / "denoise-set12.md").is_file() and (tmp_path / "res" / "denoise-set12.png").is_file()
    # a second run merges into the file: new condition and method, earlier entries kept with their run
    assert (
        main(
            [
                "bench",
                "denoise",
                "--data-root",
                str(tmp_path / "data"),
                "--sets",
                "set12",
                "--sigmas",
                "15,25",
                "--methods",
                "gaussian",
                "-o",
                str(tmp_path / "res"),
                "--quiet",
            ]
        )
        == 0
    )
    res2 = read_results(tmp_path / "res" / "denoise-set12.json")
    assert len(res2["runs"]) == 2 and set(res2["summary"]) == {"sigma25", "sp0.1", "sigma15"}
    tv, kept = dict(res2["summary"]["sigma25"]["tv"]), s["sigma25"]["tv"]
    assert tv.pop("runs") == [0]  # the figures are recomputed from the stored per-image ones (6 digits)
    assert tv == pytest.approx({k: v for k, v in kept.items() if k != "runs"}, rel=1e-5)
    assert res2["summary"]["sigma25"]["gaussian"]["runs"] == [1] and "tv" not in res2["summary"]["sigma15"]
    assert res2["models"] == res["models"] and res["models"]["gray"]["sha256"]  # the VAE rows' model stays named
    # each run names its CPU, since seconds from merged runs compare only within one
    cpus = [r["cpu"] for r in res2["runs"]]
    last = (tmp_path / "res" / "denoise-set12.md").read_text().strip().splitlines()[-1]
    assert all(cpus) and last.startswith("1. `") and last.endswith(f"--quiet` ({cpus[1]})")


TINY_DIVNOISING = dict(
    model_args={"channels": [8, 8], "blocks": 1, "latent_channels": 2},
    patch_size=32,
    batch_size=8,
    patches_per_image=4,
    eval_every=3,
    ckpt_every=3,
    samples=3,
)
TINY_R2R = dict(
    model_args={
        "widths": [8, 8, 8],
        "latent_channels": 2,
        "alpha_range": [1.0, 1.0],
        "free_bits": 0.05,
        "test_recorruptions": 2,
        "test_alpha": 1.0,
        "test_flips": True,
    },
    patch_size=32,
    batch_size=8,
    patches_per_image=4,
    eval_every=3,
    ckpt_every=3,
)


@pytest.fixture
def tiny_selfsup():
    """Shrink the frozen self-supervised settings for a test; restored afterwards."""
    from vaekit.tasks import selfsup

    old = dict(selfsup.SETTINGS), dict(selfsup.SETTINGS_R2R)
    selfsup.SETTINGS.update(TINY_DIVNOISING)
    selfsup.SETTINGS_R2R.update(TINY_R2R)
    yield
    for d, o in zip((selfsup.SETTINGS, selfsup.SETTINGS_R2R), old):
        d.clear()
        d.update(o)


@pytest.mark.parametrize("method", ["r2r", "divnoising"])
def test_denoise_fit_learns_from_noisy_images_only_and_denoises(tmp_path, capsys, tiny_selfsup, method):
    """A short self-supervised fit with the blind-estimated Gaussian level as its noise model; the fitted
    run then works as --model for vaekit denoise (draws averaged).  r2r is the default for Gaussian noise."""
    from vaekit.io import write_image
    from vaekit.pretrained import load_model

    for i in range(3):
        write_image(tmp_path / "noisy" / f"{i}.png", np.clip(degrade.gaussian(smooth_image(48, 48), 25, seed=i), 0, 1))
    extra = ["--method", "divnoising"] if method == "divnoising" else []
    assert (
        main(["denoise-fit", str(tmp_path / "noisy"), "-o", str(tmp_path / "run"), "--steps", "6", "--quiet", *extra])
        == 0
    )
    out = capsys.readouterr().out
    assert "noise model: Gaussian sigma" in out
    m = load_model(tmp_path / "run")
    level = m.likelihood.sigma * 255 if method == "divnoising" else m.noisy_sigma
    assert type(m).__name__ == ("ConvVAE" if method == "divnoising" else "SelfSupervisedDenoisingVAE")
    assert level == pytest.approx(float(out.split("sigma ")[1].split(";")[0]), abs=0.01)
    assert 15 < level < 35  # estimated blind from the noisy images
    # the same folder again trains the fit on to the steps asked, at its own level; other settings are refused
    write_image(tmp_path / "noisy" / "3.png", np.clip(degrade.gaussian(smooth_image(48, 48), 40, seed=3), 0, 1))
    fit_again = ["denoise-fit", str(tmp_path / "noisy"), "-o", str(tmp_path / "run"), "--quiet", *extra]
    assert main([*fit_again, "--steps", "8"]) == 0
    assert "8 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 8
    assert main([*fit_again, "--steps", "8", "--sigma", "5"]) == 2
    assert "holds a fit with other settings" in capsys.readouterr().err
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "noisy" / "0.png"),
                "-o",
                str(tmp_path / "d"),
                "--model",
                str(tmp_path / "run"),
                "--samples",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "d" / "samples.json").read_text())
    assert meta["method"] == "vae-selfsup" and meta["sigma"] == pytest.approx(level)
    assert len(list((tmp_path / "d").glob("sample_*.png"))) == 2
    assert main(["denoise-fit", str(tmp_path / "noisy" / "0.png"), "-o", str(tmp_path / "r2")]) == 2
    assert main(["denoise-fit", str(tmp_path / "noisy"), "-o", str(tmp_path / "r3"), "--peak", "3"]) == 2
    assert (
        main(
            [
                "denoise-fit",
                str(tmp_path / "noisy"),
                "-o",
                str(tmp_path / "r4"),
                "--noise",
                "poisson",
                "--peak",
                "30",
                "--method",
                "r2r",
            ]
        )
        == 2
    )  # r2r is Gaussian only


def test_recorrupted_pairs_have_independent_noises_of_the_stated_levels():
    """R2R: input and target noise (against the clean image) are uncorrelated, at s0*sqrt(1+a^2) and
    s0*sqrt(1+1/a^2) -- what makes the target an unbiased, independent view of the clean image."""
    from vaekit.models.denoiser import SelfSupervisedDenoisingVAE

    m = SelfSupervisedDenoisingVAE(1, widths=(8, 8, 8), latent_channels=2, noisy_sigma=30.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 256, 256, generator=g)
    y = x + torch.randn(x.shape, generator=g) * 30 / 255
    y_in, y_out, lev, var = m.recorrupt(y, alpha=0.5, generator=g)
    e_in, e_out = (y_in - x).flatten(), (y_out - x).flatten()
    s0 = 30 / 255
    assert float(e_in.std()) == pytest.approx(s0 * (1 + 0.25) ** 0.5, rel=0.02)
    assert float(e_out.std()) == pytest.approx(s0 * (1 + 4) ** 0.5, rel=0.02)
    corr = float(((e_in - e_in.mean()) * (e_out - e_out.mean())).mean() / (e_in.std() * e_out.std()))
    assert abs(corr) < 0.01
    assert float(lev) == pytest.approx(30 * 1.25**0.5) and float(var) == pytest.approx(s0**2 * 5)
    with pytest.raises(ValueError):
        SelfSupervisedDenoisingVAE(1, noisy_sigma=0)


def test_r2r_fit_on_noisy_images_alone_removes_noise():
    """Trained on nothing but noisy copies (no clean pixel reaches the loss), the conditional VAE denoises."""
    from vaekit.metrics import psnr_u8
    from vaekit.models.denoiser import SelfSupervisedDenoisingVAE
    from vaekit.tasks.denoise import vae_denoise

    torch.manual_seed(0)
    clean = [smooth_image(64, 64, seed=i) for i in range(6)]
    noisy = torch.stack(
        [torch.from_numpy(degrade.gaussian(c, 25, seed=10 + i).astype(np.float32))[None] for i, c in enumerate(clean)]
    )
    m = SelfSupervisedDenoisingVAE(1, widths=(16, 16, 16), latent_channels=2, noisy_sigma=25.0)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(300):
        out = m(noisy[torch.randint(0, 6, (4,))])
        loss = m.loss(None, out)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    before = np.mean([psnr_u8(noisy[i, 0].numpy(), c) for i, c in enumerate(clean)])
    after = np.mean([psnr_u8(vae_denoise(m, noisy[i, 0].numpy(), None)[0], c) for i, c in enumerate(clean)])
    assert after > before + 4, (before, after)
    m.test_recorruptions, m.test_flips = 8, True  # the mean of 8 recorrupted passes, each rotated/flipped
    y = noisy[0, 0, :, :56].numpy()  # not square: the rotations swap height and width
    ens = vae_denoise(m, y, None, seed=3)[0]
    assert ens.shape == y.shape and np.array_equal(ens, vae_denoise(m, y, None, seed=3)[0])
    assert psnr_u8(ens, clean[0][:, :56]) > psnr_u8(y, clean[0][:, :56]) + 4


def test_bench_denoise_selfsup_fits_on_the_noisy_set_once(tmp_path, tiny_selfsup):
    from vaekit.io import write_image
    from vaekit.tasks import selfsup

    for i in range(2):
        write_image(tmp_path / "data" / "bsd68" / f"{i:02d}.png", smooth_image(48, 48))
    selfsup.SETTINGS.update(batch_size=4, max_steps=4, eval_every=2, ckpt_every=2, samples=2)
    selfsup.SETTINGS_R2R.update(batch_size=4, max_steps=4, eval_every=2, ckpt_every=2)
    args = [
        "bench",
        "denoise",
        "--data-root",
        str(tmp_path / "data"),
        "--sets",
        "bsd68",
        "--sigmas",
        "25",
        "--methods",
        "vae-selfsup,vae-divnoising,tv",
        "-o",
        str(tmp_path / "res"),
        "--quiet",
    ]
    assert main(args) == 0
    res = read_results(tmp_path / "res" / "denoise-bsd68.json")
    fits = res["selfsup_fits"]
    assert fits["sigma25/vae-selfsup"]["method"] == "r2r" and fits["sigma25/vae-divnoising"]["method"] == "divnoising"
    assert all(f["steps"] == 4 for f in fits.values())
    assert {"vae-selfsup", "vae-divnoising"} <= set(res["summary"]["sigma25"])
    fitted = list((tmp_path / "res" / ".cache").glob("noisy-bsd68-sigma25-n2/*.npy"))
    assert len(fitted) == 2  # the noisy inputs, never the clean images
    assert main(args) == 0  # the second run reuses the fits
    again = read_results(tmp_path / "res" / "denoise-bsd68.json")["selfsup_fits"]
    for k, f in fits.items():
        assert again[k]["this_run_s"] < f["this_run_s"] + 1 and again[k]["fit_wall_s"] == f["fit_wall_s"]


def test_shipped_gray_denoiser_beats_nl_means_on_the_sample_photo():
    import vaekit
    from vaekit import baselines
    from vaekit.metrics import psnr_u8
    from vaekit.pretrained import SHIPPED, load_pretrained
    from vaekit.samples import sample_photo

    if "denoise-gray" not in SHIPPED:
        pytest.skip("no gray denoiser shipped")
    card = load_pretrained("denoise-gray").card
    st = card["metrics"]
    val = next(v for k, v in st.items() if k.startswith("validation"))
    assert val["sigma25"]["active_latent_channels"] >= 1  # a VAE in fact: the latent carries information
    clean = sample_photo("chelsea").astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    y = degrade.gaussian(clean[:128, :160], 25, seed=0)
    est = vaekit.denoise(y, 25)
    assert psnr_u8(est, clean[:128, :160]) > psnr_u8(baselines.denoise.nlm(y, 25), clean[:128, :160]) + 0.3
    blind = vaekit.denoise(y, details=True)
    assert abs(blind.sigma - 25) < 3 and blind.sigma_estimated


def test_simulated_training_noise_has_the_levels_its_map_states():
    torch.manual_seed(0)
    x = torch.full((64, 3, 32, 32), 0.5)
    y, smap = degrade.simulate_noise(x, 55.0, kinds=(1, 0, 0, 0))  # white Gaussian only
    assert y.shape == smap.shape == x.shape and (smap >= 0).all() and (smap <= 55 / 255 + 1e-6).all()
    # per example the residual's std matches its (uniform) map, clipping and 8-bit rounding aside
    sd, level = (y - x).flatten(1).std(1), smap.flatten(1).mean(1)
    ok = level > 3 / 255
    assert torch.allclose(sd[ok], level[ok], rtol=0.1)
    torch.manual_seed(0)
    assert torch.equal(degrade.simulate_noise(x, 55.0, kinds=(1, 0, 0, 0))[0], y)  # reproducible from the seed
    # Poisson-Gaussian: the level follows the signal
    ramp = torch.linspace(0, 1, 32).expand(8, 3, 32, 32).contiguous()
    _, smap = degrade.simulate_noise(ramp, 55.0, kinds=(0, 1, 0, 0))
    assert (smap[..., -1] >= smap[..., 0]).all() and (smap[..., -1] > smap[..., 0]).any()
    # camera-like: demosaicked and JPEG-compressed files are clipped to [0, 1]
    y, _ = degrade.simulate_noise(ramp, 55.0, kinds=(0, 0, 0, 1))
    assert y.min() >= 0 and y.max() <= 1


def test_correlated_training_noise_keeps_its_level_and_is_correlated():
    from vaekit.models.denoiser import correlated
    from vaekit.registry import create_model

    torch.manual_seed(0)
    n = torch.randn(8, 1, 64, 64)
    for width, rho in ((0.4, 0.05), (1.2, 0.7)):
        h = correlated(n, width)
        assert abs(float(h.std()) - 1) < 0.05
        assert float((h[..., 1:] * h[..., :-1]).mean() / h.var()) > rho  # neighbours move together
    m = create_model("denoise-vae", channels=1, widths=[8, 8, 8], latent_channels=2, corr_prob=1.0, corr_width=[1, 1])
    x = torch.full((16, 1, 32, 32), 0.5)
    y, sigma, _ = m.simulate(x, 20.0)
    r = (y - x) * 255
    assert abs(float(r.std()) - 20) < 1.5 and float((r[..., 1:] * r[..., :-1]).mean() / r.var()) > 0.5
    with pytest.raises(ValueError, match="corr_prob"):
        create_model("denoise-vae", corr_prob=1.5)


def test_bench_denoise_real_pairs_are_blind_for_all_and_clipped_protocol(tmp_path):
    """Real noisy/clean pairs: every method gets the blind level estimate; a level with a trailing c is the
    clipped 8-bit protocol (the noisy input as a file would hold it)."""
    from PIL import Image

    from vaekit.bench import BENCHES
    from vaekit.pretrained import save_model
    from vaekit.registry import create_model

    torch.manual_seed(0)
    m = create_model("denoise-vae-opponent", widths=[8, 8, 16], latent_channels=2)
    save_model(m, tmp_path / "run", {"name": "tiny-opponent"})
    for i in range(2):
        clean = smooth_image(48, 64, c=3, seed=i)
        noisy = np.clip(clean + np.random.default_rng(i).normal(0, 0.05, clean.shape), 0, 1)
        (tmp_path / "data" / "realnoise-cc15").mkdir(parents=True, exist_ok=True)
        for suffix, a in (("mean", clean), ("real", noisy)):
            Image.fromarray(np.round(a * 255).astype(np.uint8)).save(
                tmp_path / "data" / "realnoise-cc15" / f"cam_{i}_{suffix}.png"
            )
        Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(tmp_path / f"k{i}.png")
    out = tmp_path / "res"
    r = BENCHES["denoise"](
        data_root=str(tmp_path / "data"),
        sets="realnoise-cc15",
        methods="vae-blind,tv",
        model_color=str(tmp_path / "run"),
        output=str(out),
        quiet=True,
    )["realnoise-cc15"]
    assert set(r["summary"]) == {"real"} and r["n_images"] == 2
    rows = read_results(out / "denoise-realnoise-cc15.json")["per_image"]
    given = [row["tv"]["sigma_given"] for row in rows]
    assert all(g > 0 for g in given) and given == [row["vae-blind"]["sigma_estimated"] for row in rows]
    (tmp_path / "data" / "kodak").mkdir()
    for i in range(2):
        (tmp_path / f"k{i}.png").rename(tmp_path / "data" / "kodak" / f"k{i}.png")
    r = BENCHES["denoise"](
        data_root=str(tmp_path / "data"),
        sets="kodak",
        sigmas="25,25c",
        methods="vae,tv",
        model_color=str(tmp_path / "run"),
        output=str(out),
        quiet=True,
    )["kodak"]
    assert set(r["summary"]) == {"sigma25", "sigma25-clipped"}
    # simulated camera files: blind for every method, as for real pairs
    cam = BENCHES["denoise"](
        data_root=str(tmp_path / "data"),
        sets="kodak",
        sigmas="",
        noises="camera",
        methods="vae-blind,tv",
        model_color=str(tmp_path / "run"),
        output=str(tmp_path / "cam"),
        quiet=True,
    )["kodak"]
    rows = cam["per_image"]
    assert set(cam["summary"]) == {"camera"} and all(r["tv"]["sigma_given"] > 0 for r in rows)
    assert [r["tv"]["sigma_given"] for r in rows] == [r["vae-blind"]["sigma_estimated"] for r in rows]
    # clipping removes noise below 0 and above 1, so the clipped input is closer to the clean image
    assert r["summary"]["sigma25-clipped"]["noisy"]["psnr"] > r["summary"]["sigma25"]["noisy"]["psnr"]
    with pytest.raises(VaekitError, match="25c"):
        BENCHES["denoise"](data_root=str(tmp_path / "data"), sets="kodak", sigmas="25x", output=str(out))
    # a classical-only run over two sets: the first set's merged file (with VAE rows) must not add methods to the next
    r = BENCHES["denoise"](
        data_root=str(tmp_path / "data"), sets="kodak,realnoise-cc15", sigmas="25c", methods="tv", output=str(out)
    )
    runs = read_results(out / "denoise-realnoise-cc15.json")["runs"]
    assert runs[-1]["methods"] == ["tv"] and "vae" in r["kodak"]["summary"]["sigma25-clipped"]


def test_a_gray_denoiser_on_a_colour_image_works_in_opponent_channels():
    """CBM3D's decorrelating transform: orthonormal (white noise stays white at the same level), each channel
    mapped into [0, 1]; the gray model's draws and std come back as RGB."""
    from vaekit.models.denoiser import OPPONENT, OPPONENT_SCALE, OPPONENT_SHIFT
    from vaekit.tasks.denoise import vae_denoise

    assert np.allclose(OPPONENT @ OPPONENT.T, np.eye(3))
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T
    o = corners @ OPPONENT.T * OPPONENT_SCALE + OPPONENT_SHIFT
    assert o.min() >= -1e-12 and o.max() <= 1 + 1e-12  # every colour of the cube maps inside the gray range
    m = tiny_denoiser()
    y = degrade.gaussian(smooth_image(32, 40, c=3), 25, seed=0)
    mean, std, draws = vae_denoise(m, y, 25, samples=2, seed=1)
    assert mean.shape == std.shape == y.shape and len(draws) == 2 and draws[0].shape == y.shape
    assert (std > 0).all()
    with pytest.raises(VaekitError, match="sigma"):
        vae_denoise(m, y, None)  # a gray model without an estimator needs the level


def test_opponent_colour_model_starts_as_the_gray_opponent_path_and_its_mixing_learns(tmp_path):
    """A colour model initialised from a gray one gives the opponent-channel path's estimate to float
    precision; its objective trains every tensor, the mixing included, and its ELBO is per RGB image."""
    from vaekit import create_model
    from vaekit.pretrained import load_from_files, save_model
    from vaekit.tasks.denoise import vae_denoise

    g = tiny_denoiser()
    torch.manual_seed(1)
    c = create_model("denoise-vae-opponent", widths=[8, 8, 16], latent_channels=2, free_bits=0.0, clip_prob=0.5)
    assert c.channels == 3
    missing = c.load_state_dict(g.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("mix.") for k in missing)
    c.eval()
    y = degrade.gaussian(smooth_image(40, 48, c=3), 25, seed=0)
    assert np.allclose(vae_denoise(c, y, 25)[0], vae_denoise(g, y, 25)[0], atol=1e-5)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(c.from_rows(c.to_rows(x)), x, atol=1e-6)
    c.train()
    out = c(x)
    loss = c.loss(x, out)
    loss["loss"].backward()
    assert all(p.grad is not None for p in c.parameters()) and float(c.mix[2].weight.grad.abs().sum()) > 0
    rows = (out["log_px"] - out["kl"]).view(2, 3).sum(1).mean()
    assert float(loss["elbo"]) == pytest.approx(float(rows.detach()) + 32 * 32 * c.log_det, rel=1e-5)
    c.eval()
    mean, std, draws = c.denoise(torch.from_numpy(y).float().permute(2, 0, 1)[None], 25.0, samples=3)
    assert mean.shape == std.shape == (1, 3, 40, 48) and len(draws) == 3 and (std > 0).all()
    with pytest.raises(ValueError, match="RGB"):
        c.denoise(torch.rand(1, 1, 32, 32), 25.0)
    torch.nn.init.normal_(c.mix[4].weight, std=0.5)  # trained mixing: the colour model leaves the gray path
    assert not np.allclose(vae_denoise(c, y, 25)[0], vae_denoise(g, y, 25)[0], atol=1e-4)
    card = {"name": "t", "arch": "denoise-vae-opponent", "arch_args": {"widths": [8, 8, 16], "latent_channels": 2}}
    save_model(c, tmp_path, card, dtype=torch.float16)
    back = load_from_files(tmp_path / "model.safetensors", tmp_path / "model.json")
    assert np.allclose(vae_denoise(back, y, 25)[0], vae_denoise(c, y, 25)[0], atol=2e-3)


def _grown_colour_model(tmp_path, part: str, **grow):
    """A small colour model with random weights (not the zero start of its mixing and output layers), and the same
    model grown ``grow`` from its file; ``part`` (a tensor-name prefix) must be what was grown."""
    from vaekit.pretrained import save_model
    from vaekit.registry import create_model
    from vaekit.training.loop import init_weights

    torch.manual_seed(0)
    args = dict(widths=[8, 8, 16], latent_channels=2)
    src = create_model("denoise-vae-opponent", **args)
    for p in src.parameters():
        p.data.normal_(0, 0.05)
    path = save_model(src, tmp_path, {"name": "src"})
    m = create_model("denoise-vae-opponent", **args, **grow)
    assert f"fresh: {part}." in init_weights(m, str(path))
    return src, m, args


def _train_alone(m, part: str, h: int, w: int, steps: int = 3):
    """``steps`` Adam steps on two smooth crops for the parameters under ``part`` only; returns the crops."""
    params = [p for k, p in m.named_parameters() if k.startswith(part + ".")]
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.from_numpy(smooth_image(h, w, c=3).astype(np.float32)).permute(2, 0, 1)[None].expand(2, -1, -1, -1)
    for _ in range(steps):
        opt.zero_grad()
        m.loss(x, m(x))["loss"].backward()
        opt.step()
    return x


def test_camera_branch_starts_as_the_model_it_grows_from_and_trains_on_camera_files_only(tmp_path):
    """A colour model grown a camera branch starts as its source on either noise; trained alone, the branch
    changes camera-file estimates and leaves white-noise ones exactly as they were; with ``camera_prob``
    training draws camera files, flagged, at the blind estimator's level map; only such a model takes them."""
    from vaekit.registry import create_model

    src, m, args = _grown_colour_model(tmp_path, "camera", camera_input=True, camera_prob=1.0)
    y = torch.rand(2, 3, 32, 32)
    ref = src.denoise(y, 20.0)[0]
    assert torch.equal(m.denoise(y, 20.0)[0], ref) and torch.equal(m.denoise(y, 20.0, camera=True)[0], ref)
    x = _train_alone(m, "camera", 64, 64)
    assert torch.equal(m.denoise(y, 20.0)[0], ref)  # white noise: the branch is skipped
    assert not torch.allclose(m.denoise(y, 20.0, camera=True)[0], ref)
    with pytest.raises(ValueError, match="camera"):
        src.denoise(y, 20.0, camera=True)
    noisy, levels, cam = m.simulate(x)
    assert cam.tolist() == [1.0, 1.0] and levels.shape == (2, 1, 64, 64)
    for i in range(2):
        f = noisy[i].permute(1, 2, 0).numpy().astype(np.float64)
        assert np.allclose(f * 255, np.round(f * 255), atol=1e-3)  # an 8-bit file
        level, _, shape = degrade.blind_level(f)
        assert np.allclose(levels[i, 0].numpy(), level * shape, rtol=1e-4)
    assert torch.equal(m.simulate(x, 20.0)[2], torch.zeros(2))  # a given level: white noise, as asked
    with pytest.raises(ValueError, match="camera_input"):
        create_model("denoise-vae-opponent", camera_prob=0.5, **args)


def test_decoder_blocks_start_as_the_model_they_grow_from_and_learn_alone(tmp_path):
    """A colour model grown residual blocks in its decoder gives its source's estimate exactly; trained alone
    (``trainable: [deep]``), the blocks' first layers learn once their zero last layers have, and the estimate
    changes."""
    src, m, _ = _grown_colour_model(tmp_path, "deep", decoder_blocks=2)
    y = torch.rand(1, 3, 40, 56)
    assert torch.equal(m.denoise(y, 20.0)[0], src.denoise(y, 20.0)[0])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert len([k for k, _ in m.named_parameters() if k.startswith("deep.")]) == 4 * 2 * 2  # 2 levels x 2 blocks
    _train_alone(m, "deep", 48, 64)
    moved = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert {"deep.0.0.weight", "deep.0.2.weight", "deep.3.0.weight", "deep.3.2.weight"} <= moved
    assert not any(k.startswith(("e1.", "d1.", "mix.")) for k in moved)
    assert not torch.allclose(m.denoise(y, 20.0)[0], src.denoise(y, 20.0)[0])


def test_blind_camera_noise_goes_to_a_camera_model_at_the_blind_level_map():
    """A colour file whose noise is correlated goes to a camera-trained denoiser at the blind level map in one pass
    (no pixel shuffle); white noise and gray images still take the plain path."""
    from vaekit.tasks.denoise import for_noise

    x = smooth_image(96, 80)
    rgb = np.stack([x, x[::-1], 1 - x], axis=2)
    cam = degrade.camera(rgb, seed=0, photons=200, read=1, quality=85)
    calls = []

    def record(a, s, camera=False):
        calls.append(("camera", a.shape, s) if camera else ("plain", a.shape))
        return a

    est, s, path = for_noise(record, cam, level_map=True, camera=True)
    level, _, shape = degrade.blind_level(cam)
    assert path == "camera" and len(calls) == 1 and calls[0][0] == "camera" and s == level
    assert np.allclose(calls[0][2], level * shape)
    calls.clear()
    assert for_noise(record, degrade.gaussian(rgb, 10, seed=1), level_map=True, camera=True)[2] == "blind"
    assert for_noise(record, cam[..., 1], level_map=True, camera=True)[2] == "blind"
    assert [c[0] for c in calls] == ["plain", "plain"]


def test_photos_val_gray_is_the_val_split_in_luma(tmp_path):
    """photos-val-gray reads the val rows of SPLITS.tsv as Pillow's 8-bit luma, the gray training's reading."""
    from PIL import Image

    from vaekit.bench.denoise import GRAY_SETS, load_photos_val

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "SPLITS.tsv").write_text("file\tsplit\na.png\ttrain\nb.png\tval\n")
    [(name, x)] = load_photos_val(tmp_path, gray=True)
    assert name == "b.png" and x.shape == (20, 30) and "photos-val-gray" in GRAY_SETS
    assert np.array_equal(x * 255, np.asarray(Image.open(tmp_path / "b.png").convert("L"), np.float64))
    assert load_photos_val(tmp_path)[0][1].shape == (20, 30, 3)


def test_a_self_ensemble_averages_turned_passes_and_the_model_sets_its_default(tmp_path, capsys):
    """ensemble=2 is the mean of the image's pass and its half turn's (turned back); a model's own ``ensemble`` is
    the default the call overrides; draws are shared out among the passes; bad sizes get one sentence."""
    import vaekit
    from vaekit.io import write_image
    from vaekit.pretrained import save_model
    from vaekit.registry import create_model
    from vaekit.tasks.denoise import vae_denoise

    m = tiny_denoiser()  # its network is not symmetric, so the passes differ
    y = degrade.gaussian(smooth_image(40, 56), 25, seed=0).astype(np.float32)
    one = vae_denoise(m, y, 25.0)[0]
    half = vae_denoise(m, np.ascontiguousarray(y[::-1, ::-1]), 25.0)[0][::-1, ::-1]
    assert np.abs(one - half).max() > 1e-4
    two, std, _ = vae_denoise(m, y, 25.0, ensemble=2)
    np.testing.assert_allclose(two, (one + half) / 2, atol=1e-6)
    assert (std >= vae_denoise(m, y, 25.0)[1] - 1e-6).all()  # the passes' spread adds to the decoder's scale
    levels = np.full(y.shape, 25.0)
    levels[:, :20] = 10.0  # a level map turns with the image
    np.testing.assert_allclose(
        vae_denoise(m, y, levels, ensemble=2)[0],
        (vae_denoise(m, y, levels)[0] + vae_denoise(m, y[::-1, ::-1].copy(), levels[::-1, ::-1].copy())[0][::-1, ::-1])
        / 2,
        atol=1e-6,
    )
    mean, _, draws = vae_denoise(m, y, 25.0, samples=3, ensemble=8)
    assert len(draws) == 3 and np.abs(mean - np.mean(draws, 0)).max() < 1e-5
    m2 = create_model("denoise-vae", widths=[8, 8, 16], latent_channels=2, free_bits=0.0, ensemble=2).eval()
    m2.load_state_dict(m.state_dict())
    r = vaekit.denoise(y, 25, model=m2, details=True)
    assert r.ensemble == 2 and np.abs(r.image - np.clip(two, 0, 1)).max() < 1e-6
    assert vaekit.denoise(y, 25, model=m2, ensemble=1, details=True).ensemble == 1
    with pytest.raises(ValueError, match="ensemble"):
        create_model("denoise-vae", ensemble=3)
    with pytest.raises(VaekitError, match="ensemble must be one of 1, 2, 4, 8"):
        vaekit.denoise(y, 25, model=m, ensemble=3)
    with pytest.raises(VaekitError, match="classical"):
        vaekit.denoise(y, 25, method="tv", ensemble=2)
    save_model(m2, tmp_path / "run", {"name": "tiny-e2"})
    write_image(tmp_path / "y.png", y)
    assert main(["denoise", str(tmp_path / "y.png"), "-o", str(tmp_path / "o.png"), "--ensemble", "5"]) == 2
    assert "ensemble must be one of" in capsys.readouterr().err and not (tmp_path / "o.png").exists()
    args = ["denoise", str(tmp_path / "y.png"), "-o", str(tmp_path / "o.png"), "--model", str(tmp_path / "run")]
    assert main([*args, "--sigma", "25"]) == 0 and (tmp_path / "o.png").is_file()


def test_periodic_residual_hands_back_stripes_and_leaves_white_noise():
    """Fine stripes that a denoiser took for noise come back out of its residual; white noise alone, noise that is
    not white (its level under-stated) and the clipping offset in the lowest frequencies do not."""
    from vaekit.tasks.denoise import periodic_residual

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:160]
    stripes = 0.08 * np.sin(2 * np.pi * (xx / 5.3 + yy / 9.1))
    stripes[:, :60] = 0  # on most of the image, not all
    noise = rng.standard_normal(stripes.shape) * 25 / 255
    back = periodic_residual(stripes + noise, 25 / 255)
    assert back.shape == stripes.shape and back.dtype == np.float32
    assert np.mean((back - stripes) ** 2) < 0.5 * np.mean(stripes**2)  # most of the stripes, little of the noise
    assert np.mean(periodic_residual(noise, 25 / 255) ** 2) < 0.01 * np.mean(noise**2)
    np.testing.assert_allclose(periodic_residual(stripes + noise, np.full(stripes.shape, 25 / 255)), back, atol=1e-6)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(160), np.fft.fftfreq(128)))
    coloured = 3 * np.real(np.fft.ifft2(np.fft.fft2(noise) * (f < 0.15)))  # smooth and strong, its level told as 25
    assert np.mean(periodic_residual(coloured, 25 / 255) ** 2) < 0.05 * np.mean(coloured**2)
    assert np.abs(periodic_residual(np.full((64, 64), 0.05), 25 / 255)).max() < 1e-4


def test_the_vae_estimate_hands_fine_stripes_back_to_the_shipped_denoisers_mean_and_draws():
    """Rendered stripes over part of an image, which the networks partly take for noise at sigma 25: the estimate
    with the residual's periodic part is closer to the clean image, in gray and (through the luminance) in colour."""
    from vaekit.metrics import psnr_u8
    from vaekit.pretrained import SHIPPED
    from vaekit.tasks.denoise import load_denoiser, periodic_residual, vae_denoise, vae_estimate

    if not {"denoise-gray", "denoise-color"} <= set(SHIPPED):
        pytest.skip("no shipped denoisers")
    yy, xx = np.mgrid[0:128, 0:160]
    clean = np.clip(smooth_image(128, 160) + 0.08 * np.sin(2 * np.pi * (xx / 3.1 + yy / 7.7)) * (xx >= 64), 0, 1)
    y = degrade.gaussian(clean, 25, seed=0).astype(np.float32)
    m = load_denoiser(None, 1)
    mean, std, draws = vae_denoise(m, y, 25.0, samples=2, seed=1)
    fixed, std2, draws2 = vae_estimate(m, y, 25.0, samples=2, seed=1)
    assert psnr_u8(fixed, clean) > psnr_u8(mean, clean) + 0.5
    fix = periodic_residual(y - mean, 25 / 255)
    np.testing.assert_allclose(fixed, mean + fix, atol=1e-6)
    np.testing.assert_allclose(draws2[1] - draws[1], fix, atol=1e-6)
    np.testing.assert_array_equal(std2, std)
    colour = np.stack([clean, clean[::-1], 1 - clean], -1)
    yc = degrade.gaussian(colour, 25, seed=0).astype(np.float32)
    c = load_denoiser(None, 3)
    plain, fixed = vae_denoise(c, yc, 25.0)[0], vae_estimate(c, yc, 25.0)[0]
    assert psnr_u8(fixed, colour) > psnr_u8(plain, colour) + 0.1
    added = fixed - plain
    np.testing.assert_allclose(added[..., 0], added[..., 1], atol=1e-6)  # the luminance: the same in every channel
    np.testing.assert_allclose(added[..., 0], added[..., 2], atol=1e-6)


def test_ssim_is_defined_down_to_one_pixel_a_side():
    """Images of 1-6 px raised in scikit-image (a window wider than the image), through bench compensate."""
    from vaekit.metrics import ssim, ssim_u8

    rng = np.random.default_rng(0)
    for shape in ((1, 1), (2, 9), (6, 6), (7, 7), (12, 12)):
        a = torch.from_numpy(rng.random((1, 3, *shape)))
        assert ssim(a, a).item() == pytest.approx(1.0) and ssim(a, a * 0.5).item() < 1.0, shape
        u = rng.random(shape)
        assert ssim_u8(u, u) == pytest.approx(1.0), shape
