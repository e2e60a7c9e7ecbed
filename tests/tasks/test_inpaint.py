import json

import numpy as np
import pytest
import torch
from conftest import inpaint_vae
from PIL import Image, ImageDraw
from test_denoise import smooth_image

from vaekit import create_model, degrade
from vaekit.bench.common import read_results
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.models.inpainter import harmonic_fill, laplace_fill, laplace_solve, push_pull
from vaekit.pretrained import load_model, save_model
from vaekit.tasks.inpaint import detect_scratches, inpaint, latent_inpaint, pairwise_distance, vae_inpaint


def tiny_inpainter(seed=0, radius=6, perturb=True):
    """A small untrained inpaint-vae whose output layer is random (so the latent matters)."""
    torch.manual_seed(seed)
    m = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, fill_radius=radius)
    if perturb:
        with torch.no_grad():
            m.out.weight.normal_(0, 1.0)
            m.prior_head.bias[2:].fill_(0.0)  # prior log-variance 0: unit-spread draws
    return m.eval()


def box_batch():
    """Two random 32x32 RGB images with the same 16x16 hole in the middle (1 = missing)."""
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return torch.rand(2, 3, 32, 32), m


def u8(a):
    return np.clip(np.round(np.asarray(a) * 255), 0, 255).astype(np.uint8)


def test_push_pull_keeps_known_pixels_and_fills_constant_and_smooth_images():
    m = torch.from_numpy(degrade.mask_box((40, 56))).float()[None, None]
    flat = torch.full((1, 3, 40, 56), 0.3)
    assert torch.allclose(push_pull(flat * (1 - m), m), flat, atol=1e-6)
    ramp = torch.linspace(0, 1, 56).expand(1, 1, 40, 56).contiguous()
    out = push_pull(ramp * (1 - m), m)
    assert torch.equal(out[m == 0], ramp[m == 0])
    hole_err = (out - ramp).abs()[m > 0].mean()
    assert hole_err < (ramp[m > 0] - ramp[m == 0].mean()).abs().mean()  # better than the mean fill


def test_laplace_solve_is_the_exact_membrane():
    H, W = 60, 80
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    plane = np.stack([0.01 * xx + 0.005 * yy, 0.3 + 0 * xx, 1 - 0.008 * yy])  # linear: discrete-harmonic
    mask = np.zeros((H, W), bool)
    mask[10:50, 15:65] = True  # deep box, clear of the border
    out = laplace_solve(np.where(mask, 0.0, plane), mask)
    assert np.array_equal(out[:, ~mask], plane[:, ~mask])
    assert np.abs(out - plane).max() < 1e-9  # a plane is reproduced exactly, however deep the hole
    # a hole on the border: every missing pixel is the mean of its neighbours inside the image
    rng = np.random.default_rng(0)
    vals = rng.random((2, H, W))
    mask2 = np.zeros((H, W), bool)
    mask2[:30, :45] = True
    mask2 |= rng.random((H, W)) < 0.3
    out2 = laplace_solve(vals, mask2)
    pad = np.pad(out2, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    nb = np.stack([pad[:, :-2, 1:-1], pad[:, 2:, 1:-1], pad[:, 1:-1, :-2], pad[:, 1:-1, 2:]])
    assert np.abs(np.nanmean(nb, 0) - out2)[:, mask2].max() < 1e-9
    assert np.array_equal(laplace_solve(vals, np.zeros((H, W), bool)), vals)
    assert np.all(laplace_solve(vals, np.ones((H, W), bool)) == 0.5)


def test_exact_prefill_converges_where_the_jacobi_sweeps_do_not():
    ramp = torch.linspace(0, 1, 96).expand(1, 3, 64, 96).contiguous()
    big = torch.zeros(1, 1, 64, 96)
    big[..., 8:56, 12:84] = 1
    y = ramp * (1 - big)
    assert (laplace_fill(y, big) - ramp).abs().max() < 1e-5
    assert (harmonic_fill(y, big, 50) - ramp).abs().max() > 0.02  # 50 sweeps: far from the membrane
    small = (torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    y = torch.rand(1, 3, 64, 96) * (1 - small)
    assert (laplace_fill(y, small) - harmonic_fill(y, small, 50)).abs().max() < 1e-3  # scattered: both converge
    model = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, prefill="exact")
    base, _, _ = model.context(ramp * (1 - big), big)
    assert (base - ramp).abs().max() < 1e-5
    with pytest.raises(ValueError, match="prefill"):
        inpaint_vae(channels=3, widths=[8, 8, 16], prefill="multigrid")


def test_ship_can_change_an_inference_setting_but_no_tensor(tmp_path, monkeypatch):
    import vaekit.pretrained as P

    run = tmp_path / "run"
    save_model(tiny_inpainter(), run, {"name": "run"})
    monkeypatch.setattr(P, "WEIGHTS_DIR", tmp_path / "weights")
    P.ship(run, "tiny-inpainter", arch_args={"prefill": "exact"})
    stem = tmp_path / "weights" / "tiny-inpainter"
    back = P.load_from_files(stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    assert back.prefill == "exact" and back.card["arch_args"]["prefill"] == "exact"
    ref = tiny_inpainter()
    assert all(torch.equal(v, ref.state_dict()[k].half().float()) for k, v in back.state_dict().items())
    with pytest.raises(RuntimeError):  # an override that changes a tensor's shape is refused
        P.ship(run, "tiny-inpainter", arch_args={"latent_channels": 3})


def test_inpainting_vae_trains_and_its_masks_are_seeded():
    m = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, free_bits=0.05)
    a = m.random_masks(6, 32, 40, generator=torch.Generator().manual_seed(1))
    b = m.random_masks(6, 32, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (6, 1, 32, 40)
    pix = m.random_masks(6, 32, 40, generator=torch.Generator().manual_seed(1), probs=(1, 0, 0, 0))
    assert all(
        0.2 < float(pix[i].mean()) < 0.95 and float(pix[i, 0, :, 1:].ne(pix[i, 0, :, :-1]).float().mean()) > 0.2
        for i in range(6)
    )  # scattered pixels only: neighbours often differ
    with pytest.raises(ValueError, match="mask_probs"):
        inpaint_vae(channels=3, widths=[8, 8, 16], mask_probs=[0.5, 0.5])
    assert all(0 < float(a[i].mean()) < 1 for i in range(6))
    x = torch.rand(6, 3, 32, 40)
    out = m(x)
    assert torch.equal(out["x_hat"][out["mask"].expand_as(x) == 0], x[out["mask"].expand_as(x) == 0])
    loss = m.loss(x, out)
    loss["loss"].backward()
    assert np.isfinite(float(loss["loss"].detach())) and float(loss["kl"]) >= 0
    assert all(p.grad is not None for p in m.parameters())
    kl, npos = m.latent_stats(x, a)
    assert kl.shape == (6, 2) and npos == 4 * 5


def test_posterior_starts_at_its_initial_log_variance():
    x, m = box_batch()
    for v in (0.0, -6.0):
        torch.manual_seed(0)
        model = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, q_init_logvar=v)
        base, skips, _ = model.context(x * (1 - m), m)
        _, lv = model.posterior(x, skips[2], base)
        assert abs(float(lv.mean()) - v) < 0.5  # the head's weights add only a little at init
    assert model.arch_args["q_init_logvar"] == -6.0
    floored = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, q_init_logvar=-6.0, min_logvar=-2.0)
    base, skips, (_, plv) = floored.context(x * (1 - m), m)
    assert float(floored.posterior(x, skips[2], base)[1].min()) == -2.0 and float(plv.min()) >= -2.0


def test_coarse_posterior_reads_only_block_means():
    torch.manual_seed(0)
    model = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, q_view="coarse")
    x, m = box_batch()
    base, skips, _ = model.context(x * (1 - m), m)
    wiggle = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16) * 0.1  # zero mean in every 8x8 block
    a = model.posterior(x, skips[2], base)
    b = model.posterior(x + wiggle, skips[2], base)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))
    c = model.posterior(x + 0.1, skips[2], base)  # a change of the block means moves it
    assert not torch.allclose(a[0], c[0], atol=1e-4)
    out = model(x)
    model.loss(x, out)["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="q_view"):
        inpaint_vae(channels=3, widths=[8, 8, 16], q_view="sharp")


def test_posterior_skip_carries_the_block_mean_residual_from_the_start():
    x, m = box_batch()
    torch.manual_seed(0)
    plain = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=4, q_view="coarse")
    torch.manual_seed(0)
    skip = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=4, q_view="coarse", q_skip=10.0)
    base, skips, _ = skip.context(x * (1 - m), m)
    res = torch.nn.functional.avg_pool2d(x - base, 8)
    diff = skip.posterior(x, skips[2], base)[0] - plain.posterior(x, skips[2], base)[0]
    assert torch.allclose(diff[:, :3], 10.0 * res, atol=1e-5) and float(diff[:, 3].abs().max()) == 0.0
    assert float(res[..., 1:3, 1:3].abs().mean()) > 0.01  # inside the hole the residual is not nothing
    with pytest.raises(ValueError, match="q_skip"):
        inpaint_vae(channels=3, widths=[8, 8, 16], q_skip=10.0)  # needs the coarse view


def test_vae_inpaint_keeps_known_pixels_goes_coarse_to_fine_and_samples_differ():
    img = smooth_image(72, 100, c=3)
    mask = degrade.mask_box(img.shape)  # 18 px deep: beyond the radius 6, so the pyramid is used
    model = tiny_inpainter()
    one, std, fills = vae_inpaint(model, img, mask)
    assert std is None and fills == []
    assert np.array_equal(u8(one)[~mask], u8(img)[~mask])
    est, std, fills = vae_inpaint(model, img, mask, samples=4, seed=3)
    assert len(fills) == 4 and std.shape == img.shape
    for f in fills:
        assert np.array_equal(u8(f)[~mask], u8(img)[~mask])  # known pixels identical in every sample
    assert pairwise_distance(fills, mask) > 1e-5 and float(std[mask].mean()) > 0  # untrained: small, not 0
    assert np.all(std[~mask] == 0)
    again = vae_inpaint(model, img, mask, samples=4, seed=3)[0]
    assert np.array_equal(est, again)  # seeded
    # gray images go through the colour model as three equal channels
    g = vae_inpaint(model, img.mean(2), mask)[0]
    assert g.shape == mask.shape and np.array_equal(u8(g)[~mask], u8(img.mean(2))[~mask])


def test_vae_inpaint_tiles_large_images():
    img = smooth_image(150, 170, c=3)
    mask = degrade.mask_strokes(img.shape, "medium", seed=2)
    model = tiny_inpainter(perturb=False)  # zero residual: the output is the push-pull pre-fill
    whole = vae_inpaint(model, img, mask, tile=512)[0]
    tiled = vae_inpaint(model, img, mask, tile=64, overlap=16)[0]
    assert np.array_equal(u8(tiled)[~mask], u8(img)[~mask])
    err_w, err_t = (np.abs(a - img)[mask].mean() for a in (whole, tiled))
    assert err_t < 1.5 * err_w + 0.01  # tiling costs little


def test_self_ensemble_averages_turned_and_flipped_passes():
    img = smooth_image(40, 56, c=3)  # not square: the quarter turns swap height and width
    mask = degrade.mask_strokes(img.shape, "medium", seed=4)
    model = tiny_inpainter(radius=24)  # untrained and random: not equivariant, so every pass differs
    one = vae_inpaint(model, img, mask)[0]
    half = vae_inpaint(model, img[::-1, ::-1], mask[::-1, ::-1])[0][::-1, ::-1]
    assert np.abs(one - half)[mask].max() > 1e-3
    two = vae_inpaint(model, img, mask, ensemble=2)[0]
    inside = (one > 0) & (one < 1) & (half > 0) & (half < 1)  # each pass is clipped, the average once
    assert inside[mask].mean() > 0.5 and np.allclose(two[inside], ((one + half) / 2)[inside], atol=1e-5)
    turned = vae_inpaint(model, np.rot90(img), np.rot90(mask))[0]
    four = vae_inpaint(model, img, mask, ensemble=4)[0]
    assert not np.allclose(four, two, atol=1e-4) and np.abs(np.rot90(turned, -1) - one)[mask].max() > 1e-3
    est, std, fills = vae_inpaint(model, img, mask, ensemble=8, samples=3, seed=1)
    for f in (four, est, *fills):
        assert f.shape == img.shape and np.array_equal(u8(f)[~mask], u8(img)[~mask])
    assert pairwise_distance(fills, mask) > 0
    with pytest.raises(VaekitError, match="ensemble must be one of"):
        inpaint(img, mask, model=model, ensemble=3)
    with pytest.raises(VaekitError, match="classical"):
        inpaint(img, mask, method="telea", ensemble=2)
    assert np.array_equal(inpaint(img, mask, model=model, ensemble=2), two)


def test_latent_inpainting_with_a_generative_vae():
    torch.manual_seed(0)
    vae = create_model("mlp-vae", image_shape=(1, 12, 12), hidden=[32], latent_dim=4).eval()
    img = smooth_image(12, 12)
    mask = np.zeros((12, 12), bool)
    mask[3:9, 3:9] = True
    est, std, fills = latent_inpaint(vae, img, mask, samples=3, iters=5)
    assert len(fills) == 3 and np.array_equal(u8(est)[~mask], u8(img)[~mask])
    with pytest.raises(VaekitError, match="12x12"):
        latent_inpaint(vae, smooth_image(16, 16), np.ones((16, 16), bool))
    out = inpaint(img, mask, model=vae, iters=5)
    assert out.shape == img.shape


def scratched(seed=0):
    img = smooth_image(160, 200, c=3)
    im = Image.new("L", (200, 160), 0)
    d = ImageDraw.Draw(im)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        x0 = rng.uniform(20, 180)
        d.line([(x0, 0), (x0 + rng.uniform(-25, 25), 159)], fill=255, width=2)
    truth = np.asarray(im) > 127
    out = img.copy()
    out[truth] = 0.97
    return img, out, truth


def test_scratch_detection_finds_long_thin_lines_only():
    from scipy.ndimage import binary_dilation

    clean, img, truth = scratched()
    m = detect_scratches(img)
    assert (m & truth).sum() / truth.sum() > 0.9
    assert (m & binary_dilation(truth, iterations=2)).sum() / m.sum() > 0.9
    assert detect_scratches(clean).mean() < 0.005
    dots = clean.copy()
    dots[::20, ::20] = 1.0  # isolated bright dots are not scratches
    assert detect_scratches(dots).mean() < 0.005


def test_inpaint_api_validates_its_input():
    img = smooth_image(32, 40, c=3)
    with pytest.raises(VaekitError, match="mask"):
        inpaint(img, np.zeros((31, 40), bool), method="telea")
    with pytest.raises(VaekitError, match="no pixel"):
        inpaint(img, np.zeros((32, 40), bool), method="telea")
    with pytest.raises(VaekitError, match="every pixel"):
        inpaint(img, np.ones((32, 40), bool), method="telea")
    with pytest.raises(VaekitError, match="samples"):
        inpaint(img, degrade.mask_box(img.shape), 0, method="telea")
    box = degrade.mask_box(img.shape)
    with pytest.raises(VaekitError, match=r"H x W .* not of shape \(32, 40, 3\): give one of its channels"):
        inpaint(img, np.dstack([box] * 3), method="telea")  # an RGB mask: which channel was meant is not guessed
    assert np.array_equal(inpaint(img, box[..., None], method="telea"), inpaint(img, box, method="telea"))


@pytest.fixture
def files(tmp_path):
    img = smooth_image(64, 80, c=3)
    Image.fromarray(u8(img)).save(tmp_path / "a.png")
    mask = degrade.mask_box(img.shape)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((64, 80), 255, np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "text.png").write_text("not an image")
    save_model(tiny_inpainter(), tmp_path / "model", {"name": "tiny"})
    return tmp_path, img, mask


def test_cli_inpaint_files_samples_and_folders(files, capsys):
    d, img, mask = files
    assert (
        main(
            [
                "inpaint",
                str(d / "a.png"),
                "--mask",
                str(d / "m.png"),
                "--model",
                str(d / "model"),
                "-o",
                str(d / "r.png"),
            ]
        )
        == 0
    )
    out = np.asarray(Image.open(d / "r.png"))
    assert np.array_equal(out[~mask], u8(img)[~mask])
    assert (
        main(
            [
                "inpaint",
                str(d / "a.png"),
                "--mask",
                str(d / "m.png"),
                "--model",
                str(d / "model"),
                "--samples",
                "3",
                "-o",
                str(d / "fills"),
            ]
        )
        == 0
    )
    meta = json.loads((d / "fills" / "samples.json").read_text())
    assert meta["N"] == 3 and meta["pairwise_hole_rmse"] > 0
    assert {p.name for p in (d / "fills").iterdir()} >= {"mean.png", "std.png", "sample_000.png", "sample_002.png"}
    assert main(["inpaint", str(d / "a.png"), "--box", "10,10,30,20", "--method", "telea", "-o", str(d / "b.png")]) == 0
    # folders: masks matched by name
    (d / "in").mkdir()
    (d / "masks").mkdir()
    Image.fromarray(u8(img)).save(d / "in" / "x.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(d / "masks" / "x.png")
    assert (
        main(
            [
                "inpaint",
                str(d / "in"),
                "--mask-dir",
                str(d / "masks"),
                "--method",
                "ns",
                "-o",
                str(d / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (d / "out" / "x.png").is_file()
    # scratch detection with the mask saved for inspection
    _, sc, truth = scratched()
    Image.fromarray(u8(sc)).save(d / "sc.png")
    assert (
        main(
            [
                "inpaint",
                str(d / "sc.png"),
                "--detect",
                "scratches",
                "--save-mask",
                str(d / "sm.png"),
                "--method",
                "telea",
                "-o",
                str(d / "fixed.png"),
            ]
        )
        == 0
    )
    saved = np.asarray(Image.open(d / "sm.png")) > 127
    assert (saved & truth).sum() / truth.sum() > 0.9
    # a folder where one photo has no scratch: it passes unchanged, and the run does not fail
    clean, _, _ = scratched()
    (d / "scans").mkdir()
    Image.fromarray(u8(sc)).save(d / "scans" / "scratched.png")
    Image.fromarray(u8(clean)).save(d / "scans" / "clean.png")
    argv = ["inpaint", str(d / "scans"), "--detect", "scratches", "--method", "telea", "-o", str(d / "rep"), "--quiet"]
    assert main(argv) == 0
    assert np.array_equal(np.asarray(Image.open(d / "rep" / "clean.png")), u8(clean))
    assert not np.array_equal(np.asarray(Image.open(d / "rep" / "scratched.png")), u8(sc))


def test_cli_inpaint_fills_transparent_pixels_and_reads_a_zero_one_mask(files):
    """An editor's eraser leaves transparent pixels: --detect transparent fills them (and only them); a mask saved
    as 0/1 bytes marks its 1s."""
    d, img, mask = files
    erased = np.dstack([u8(img), np.where(mask, 0, 255).astype(np.uint8)])
    erased[mask, :3] = 0  # what lies under a transparent pixel is not read
    Image.fromarray(erased).save(d / "erased.png")
    argv = ["inpaint", str(d / "erased.png"), "--detect", "transparent", "--method", "telea", "-o", str(d / "t.png")]
    assert main(argv) == 0
    out = np.asarray(Image.open(d / "t.png"))
    assert out.shape == img.shape and np.array_equal(out[~mask], u8(img)[~mask])
    assert np.abs(out[mask].astype(float) - u8(img)[mask]).mean() < 20  # filled from around, not left black
    assert main(["inpaint", str(d / "a.png"), "--detect", "transparent", "-o", str(d / "n.png")]) == 2  # no alpha
    Image.fromarray(mask.astype(np.uint8)).save(d / "m01.png")
    argv = ["inpaint", str(d / "a.png"), "--mask", str(d / "m01.png"), "--method", "telea", "-o", str(d / "z.png")]
    assert main(argv) == 0
    assert np.array_equal(np.asarray(Image.open(d / "z.png")), np.asarray(Image.open(d / "t.png")))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--mask", "small.png"], "10x10"),
        (["--mask", "empty.png"], "no pixel"),
        (["--mask", "full.png"], "every pixel"),
        (["--mask", "text.png"], "not an image"),
        (["--box", "0,0,500,10"], "does not fit"),
        (["--box", "1,2,3"], "x0,y0,x1,y1"),
        ([], "exactly one of"),
        (["--mask", "m.png", "--method", "nope"], "unknown inpainting method 'nope'; choose one of vae, telea"),
        (["--mask", "m.png", "--ensemble", "3"], "ensemble must be one of"),
    ],
)
def test_cli_inpaint_bad_input_is_one_line_and_exit_2(files, capsys, args, words):
    d, _, _ = files
    fixed = [a if not a.endswith(".png") else str(d / a) for a in args]
    rc = main(
        ["inpaint", str(d / "a.png"), "--method", "telea", *fixed, "-o", str(d / "r.png")]
    )  # a later --method wins
    err = capsys.readouterr().err.strip()
    assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert not (d / "r.png").exists()


def test_a_run_that_is_still_training_loads_from_its_checkpoint(tmp_path):
    m = tiny_inpainter()
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {"model": m.state_dict(), "step": 7, "config": {"model": "inpaint-vae", "model_args": m.arch_args}},
        run / "checkpoint.pt",
    )
    back = load_model(run)
    assert back.card["checkpoint_step"] == 7
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    from torch.optim.swa_utils import AveragedModel

    avg = AveragedModel(m)  # a run with a weight average validates and saves the average: so does its checkpoint
    for p in avg.module.parameters():
        p.data.mul_(0.5)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**ck, "ema": avg.state_dict()}, run / "checkpoint.pt")
    back = load_model(run)
    assert all(torch.equal(a, b) for a, b in zip(avg.module.state_dict().values(), back.state_dict().values()))


def test_bench_inpaint_on_a_tiny_set(files, tmp_path):
    d, img, _ = files
    root = tmp_path / "data"
    (root / "kodak").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(u8(smooth_image(48, 64, c=3, seed=i)[:, :: (1 if i == 0 else -1)])).save(
            root / "kodak" / f"k{i}.png"
        )
    out = tmp_path / "results"
    assert (
        main(
            [
                "bench",
                "inpaint",
                "--data-root",
                str(root),
                "--sets",
                "kodak",
                "--masks",
                "box,pixels0.5",
                "--methods",
                "vae,vae-x2,vae-8,telea,mean",
                "--model",
                str(d / "model"),
                "-o",
                str(out),
                "--quiet",
                "--samples-limit",
                "1",
            ]
        )
        == 0
    )
    res = read_results(out / "inpaint-kodak.json")
    s = res["summary"]
    assert set(s) == {"box", "pixels0.5"} and s["box"]["best_classical"] in ("telea", "mean")
    assert s["pixels0.5"]["telea"]["hole_psnr"] > s["pixels0.5"]["mean"]["hole_psnr"]
    assert s["box"]["vae-8"]["pairwise_hole_rmse"] > 0 and "sample_hole_psnr" in s["box"]["vae-8"]
    assert s["box"]["vae-8"]["n_images"] == 1 and s["box"]["vae"]["n_images"] == 2  # --samples-limit 1
    assert s["box"]["vae-x2"]["n_images"] == 2 and "margin_over_best_classical" in s["box"]["vae-x2"]
    assert s["box"]["vae-x2"]["hole_psnr"] != s["box"]["vae"]["hole_psnr"]  # an untrained model: not equivariant
    assert abs(s["pixels0.5"]["hole_fraction"] - 0.5) < 0.05
    shas = {(r["image"], r["mask"]): r["mask_sha256"] for r in res["per_image"]}
    assert shas["k0.png", "pixels0.5"] != shas["k1.png", "pixels0.5"]  # seeded per image
    assert shas["k0.png", "box"] == shas["k1.png", "box"]  # the centred box of a same-size image
    assert (out / "inpaint-kodak.md").is_file() and (out / "inpaint-kodak.png").is_file()


def test_kl_balancing_weights_the_posteriors_pull_only():
    x, m = box_batch()
    grads = {}
    for w in (1.0, 0.1):
        torch.manual_seed(0)
        model = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, q_kl_weight=w)
        torch.manual_seed(1)
        out = model(x, m)
        out["kl_train"].sum().backward()  # the training KL alone
        grads[w] = (
            {k: p.grad.clone() for k, p in model.named_parameters() if k.startswith("q_")},
            {k: p.grad.clone() for k, p in model.named_parameters() if k.startswith("prior_head")},
            out["kl_train"].detach(),
            out["kl"].detach(),
        )
    (q1, p1, t1, k1), (q2, p2, t2, k2) = grads[1.0], grads[0.1]
    assert torch.allclose(t1, k1) and torch.allclose(t2, k2) and torch.allclose(k1, k2)  # its value: the true KL
    assert all(torch.allclose(q2[k], 0.1 * q1[k], atol=1e-6) for k in q1)  # the posterior's pull, x0.1
    assert all(torch.allclose(p2[k], p1[k], atol=1e-6) for k in p1)  # the prior's, in full
    with pytest.raises(ValueError, match="q_kl_weight"):
        inpaint_vae(channels=3, widths=[8, 8, 16], q_kl_weight=0.0)


def test_latent_gate_keeps_the_latent_to_deep_blocks():
    torch.manual_seed(0)
    model = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, latent_gate=0.9)
    with torch.no_grad():
        model.out.weight.normal_(0, 0.5)
        model.d3[0].weight[:, 16:] *= 100.0  # the latent moves the fill strongly where it lives
    x = torch.rand(1, 3, 32, 32)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:16, 8:16] = 1  # one whole 8x8 block missing ...
    m[..., 24:32, 0:32:2] = 1  # ... and a row of half-missing blocks
    assert model.gate(m)[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    base, skips, (pm, plv) = model.context(x * (1 - m), m)
    a = model.decode(pm, skips, base, m)
    z = pm.clone()
    z[..., 3, :] += 5.0  # a change of the latent in the half-missing row does nothing ...
    assert torch.equal(model.decode(z, skips, base, m), a)
    z[..., 1, 1] += 5.0  # ... in the missing block it does
    assert not torch.allclose(model.decode(z, skips, base, m), a, atol=1e-3)
    out = model(x, m)  # the KL counts the one live position only
    qm, qlv = model.posterior(x, skips[2], base)
    live = torch.nn.functional.pad(torch.ones(1, 1, 1, 1), (1, 2, 1, 2))
    from vaekit.models.denoiser import gaussian_kl

    assert torch.allclose(out["kl"], (gaussian_kl(qm, qlv, pm, plv) * live).sum((1, 2, 3)), rtol=1e-5)
    with pytest.raises(ValueError, match="latent_gate"):
        inpaint_vae(channels=3, widths=[8, 8, 16], latent_gate=1.5)


def test_near_weight_falls_linearly_from_reach_to_twice_reach():
    from vaekit.models.inpainter import near_weight

    m = torch.ones(1, 1, 3, 16)
    m[..., 0] = 0  # one known column: distance to it = column index
    w = near_weight(m, 3)[0, 0, 1]
    assert torch.allclose(w, torch.tensor([1, 1, 1, 1, 0.75, 0.5, 0.25] + [0.0] * 9))


def test_detail_path_changes_only_hole_pixels_near_known_ones():
    torch.manual_seed(0)
    plain = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2)
    torch.manual_seed(0)
    det = inpaint_vae(channels=3, widths=[8, 8, 16], latent_channels=2, detail=[8, 3, 2])
    with torch.no_grad():  # the same U-Net, with an output that is not the pre-fill
        det.out.weight.normal_(0, 0.5)
        plain.out.weight.copy_(det.out.weight)
        det.detail[-1].weight.normal_(0, 0.5)
    x = torch.rand(1, 3, 48, 48)
    m = torch.zeros(1, 1, 48, 48)
    m[..., 4:44, 4:44] = 1
    a, b = plain.inpaint(x, m)[0], det.inpaint(x, m)[0]
    assert torch.equal(b[..., m[0, 0] == 0], x[..., m[0, 0] == 0])  # known pixels kept
    assert torch.equal(a[..., 9:39, 9:39], b[..., 9:39, 9:39])  # deeper than 2 * reach: the U-Net's fill
    assert (a[..., 4:6, 4:44] - b[..., 4:6, 4:44]).abs().min() > 0  # near the border: the detail path
    with pytest.raises(ValueError, match="detail"):
        inpaint_vae(channels=3, widths=[8, 8, 16], detail=[8, 3, 0])


def test_detail_blocks_deepen_a_trained_detail_path_without_changing_it(tmp_path):
    from vaekit.training.loop import init_weights

    torch.manual_seed(0)
    args = dict(channels=3, widths=[8, 8, 16], latent_channels=2, detail=[8, 4, 2])
    old = inpaint_vae(**args)
    with torch.no_grad():  # a "trained" detail path: its output is not the pre-fill
        old.detail[-1].weight.normal_(0, 0.5)
    save_model(old, tmp_path / "old", {"arch": "inpaint-vae"})
    deep = inpaint_vae(detail_blocks=2, **args)
    note = init_weights(deep, str(tmp_path / "old" / "model.safetensors"))
    assert "fresh: detail_res.0.0.bias" in note and "detail.0" not in note.split("fresh:")[1]
    x = torch.rand(1, 3, 32, 32)
    m = (torch.rand(1, 1, 32, 32) < 0.5).float()
    a = old.eval().inpaint(x, m)[0]
    assert torch.equal(a, deep.eval().inpaint(x, m)[0])  # the blocks start as the identity
    with torch.no_grad():
        deep.detail_res[1][-1].weight.normal_(0, 0.5)
    b = deep.inpaint(x, m)[0]
    assert (a - b)[..., m[0, 0] > 0].abs().max() > 1e-3  # once trained, they change the fill...
    assert torch.equal(b[..., m[0, 0] == 0], x[..., m[0, 0] == 0])  # ...of hole pixels only
    with pytest.raises(ValueError, match="detail_blocks"):
        inpaint_vae(channels=3, widths=[8, 8, 16], detail_blocks=2)
