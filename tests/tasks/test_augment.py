"""Classical enhancement primitives, latent augmentation and exposure compensation."""

import numpy as np
import pytest
import torch

from vaekit import create_model, enhance
from vaekit.baselines import BASELINES
from vaekit.batch import read_manifest
from vaekit.errors import VaekitError
from vaekit.tasks import compensate as comp
from vaekit.tasks.augment import decoder_tangents, interpolate_pair, latent_variants, tangent_variants


def variant_rows(out):
    """One row per variant written: the ``variants`` of every input's manifest line."""
    return [v for row in read_manifest(out).values() for v in row["variants"]]


def photo(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([0.2 + 0.6 * xx / w, 0.3 + 0.4 * yy / h, 0.5 + 0.3 * np.sin(xx / 6.0)], axis=2)
    return np.clip(base + rng.normal(0, 0.03, (h, w, 3)), 0, 1).astype(np.float32)


def test_primitives_do_what_they_say():
    img = photo()
    assert enhance.contrast(img, factor=1.5).std() > img.std()
    assert np.allclose(enhance.contrast(img, factor=1.0), img, atol=1e-6)
    g = img.mean(2)
    assert enhance.erode(g, size=3).mean() < g.mean() < enhance.dilate(g, size=3).mean()
    sat = enhance.saturation(img, factor=0.0)
    assert np.allclose(sat[..., 0], sat[..., 1], atol=1e-5)  # no colour left
    sharp = enhance.sharpen(g, amount=1.0)
    assert np.abs(np.diff(sharp, axis=1)).mean() > np.abs(np.diff(g, axis=1)).mean()
    # a translation by whole pixels is a shift; a rotation by 0 degrees changes nothing
    t = enhance.translate(g, dx=3, dy=0)
    assert np.allclose(t[:, 3:], g[:, :-3], atol=1e-5)
    assert np.allclose(enhance.rotate(g, degrees=0.0), g, atol=1e-5)
    r = enhance.rotate(g, degrees=90.0)
    assert r.shape == g.shape
    a = enhance.random_affine(g, np.random.default_rng(3))
    b = enhance.random_affine(g, np.random.default_rng(3))
    assert np.array_equal(a, b)
    out = enhance.apply_ops((img * 255).astype(np.uint8), "contrast,sharpen,denoise")
    assert out.shape == img.shape and out.dtype == np.float32
    with pytest.raises(VaekitError, match="unknown operation"):
        enhance.apply_ops(img, "contrast,blurp")
    g8 = (g * 255).astype(np.uint8)  # a strength is the operation's own parameter
    turned = enhance.contrast(enhance.rotate(g8, degrees=90), factor=1.5)
    assert np.array_equal(enhance.apply_ops(g8, "rotate=90,contrast=1.5"), turned)
    assert np.array_equal(enhance.apply_ops(g8, "rotate"), enhance.rotate(g8))  # 10 degrees, its default
    for bad in ("erode=2.5", "erode=0", "rotate=nan", "scale=-1", "sharpen="):
        with pytest.raises(VaekitError, match="must be"):
            enhance.apply_ops(g8, bad)


def test_latent_variants_spread_with_strength():
    torch.manual_seed(0)
    m = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[16], latent_dim=3)
    x = torch.rand(2, 1, 8, 8)
    v0 = latent_variants(m, x, 4, strength=0.0, seed=1)
    v1 = latent_variants(m, x, 4, strength=1.0, seed=1)
    v3 = latent_variants(m, x, 4, strength=3.0, seed=1)
    assert v0.shape == (2, 4, 1, 8, 8)
    assert torch.allclose(v0[:, 0], v0[:, 3])  # strength 0: the reconstruction, n times
    spread = [float(v.std(1).mean()) for v in (v0, v1, v3)]
    assert spread[0] < 1e-6 < spread[1] < spread[2]
    assert torch.equal(v1, latent_variants(m, x, 4, strength=1.0, seed=1))
    mixed = latent_variants(m, x, 2, strength=0.5, seed=1, classical=True)
    assert mixed.shape == (2, 2, 1, 8, 8) and 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    mid = interpolate_pair(m, x[0], x[1], 0.5)
    assert mid.shape == (1, 8, 8)
    for bad in (dict(strength=-0.1), dict(strength=3.5)):
        with pytest.raises(VaekitError, match="strength"):
            latent_variants(m, x, 2, **bad)
    with pytest.raises(VaekitError, match="at least 1"):
        latent_variants(m, x, 0)


def test_degradation_and_exact_inverse():
    img = photo() * 0.8
    p = dict(gain=0.5, gamma=1.6, cast=(1.2, 1.0, 0.8))
    y = comp.degrade_exposure(img, **p)
    back = comp.apply_correction(y, **p)
    assert np.abs(back - img).max() < 1e-4
    g = img.mean(-1)  # gray: gain and gamma, the cast is ignored
    assert np.abs(comp.degrade_exposure(g, gain=0.5, gamma=1.6, cast=(2, 1, 1)) - (0.5 * g) ** 1.6).max() < 1e-5
    rng = np.random.default_rng(0)
    q = comp.random_degradation(rng)
    assert 0.3 <= q["gain"] <= 3 and 0.5 <= q["gamma"] <= 2 and all(0.7 <= c <= 1.3 for c in q["cast"])
    q = comp.random_degradation(rng, strength="mild")
    assert 0.75 <= q["gain"] <= 1.33 and 0.8 <= q["gamma"] <= 1.25 and all(0.9 <= c <= 1.1 for c in q["cast"])
    assert comp.random_degradation(rng, strength="identity") == {"gain": 1.0, "gamma": 1.0, "cast": [1.0] * 3}
    with pytest.raises(VaekitError, match="strength"):
        comp.random_degradation(rng, strength="huge")


def test_the_prior_and_the_parameterisation_of_the_exposure_model():
    from vaekit.models import exposure

    theta, ident = exposure.draw_theta(4000, torch.Generator().manual_seed(0))
    assert 0.27 < float(ident.float().mean()) < 0.33 and (theta[ident] == 0).all()
    assert theta[:, 0].exp().min() > 0.3 * 0.7 and theta[:, 1].exp().max() <= 2.0 + 1e-6
    p = {"gain": 0.5, "gamma": 1.5, "cast": [1.2, 1.0, 0.9]}
    q = exposure.theta_to_params(exposure.params_to_theta(**p))
    assert np.isclose(np.prod(q["cast"]), 1.0) and np.isclose(q["gamma"], 1.5)
    assert np.allclose(np.array(q["cast"]) * q["gain"], np.array(p["cast"]) * p["gain"])  # same degradation


def test_classical_compensation_improves_a_cast_dark_image():
    img = photo()
    y = comp.degrade_exposure(img, gain=0.5, gamma=1.0, cast=(1.25, 1.0, 0.8))
    err = lambda a: float(np.mean((a - img) ** 2))  # noqa: E731
    for name, fn in BASELINES["compensate"].items():
        out = fn(y)
        assert out.shape == img.shape and out.dtype == np.float32, name
    assert err(BASELINES["compensate"]["gray-world"](y)) < err(y)
    assert err(BASELINES["compensate"]["percentile"](y)) < err(y)
    u8 = comp.compensate((y * 255).astype(np.uint8), method="gray-world")  # the task keeps the dtype
    assert u8.dtype == np.uint8


def tiny_posterior(p_change: float, gain: float = 0.5):
    """An untrained exposure posterior whose answer is set by its output bias: P(change) and the gain."""
    from vaekit.models import exposure

    torch.manual_seed(0)
    m = create_model("exposure-posterior", widths=[4, 4], quantiles=4, hidden=8).eval()
    with torch.no_grad():
        m.out.weight.zero_()
        m.out.bias.zero_()
        trained, used = exposure.PRIOR["identity"], comp.NO_CHANGE_PRIOR  # the task rescales the prior odds
        m.out.bias[0] = float(np.log((1 - p_change) / p_change * trained / (1 - trained) * (1 - used) / used))
        m.out.bias[1] = float(np.log(gain))
        m.out.bias[5:] = -4.0
    return m


def test_the_posterior_leaves_a_photo_alone_or_applies_its_correction():
    img = (photo() * 255).astype(np.uint8)
    r = comp.compensate(img, model=tiny_posterior(0.2), details=True)
    assert (r.image == img).all() and not r.changed and np.isclose(r.p_change, 0.2, atol=1e-4)
    r = comp.compensate(img, model=tiny_posterior(0.9, gain=0.5), details=True)
    assert r.changed and np.isclose(r.gain, 0.5, atol=1e-4) and r.log_odds_change > 2
    assert abs(r.image.astype(float).mean() - np.clip(img * 2.0, 0, 255).mean()) < 1
    r = comp.compensate(img, model=tiny_posterior(0.5), samples=6, seed=0, details=True)
    assert len(r.samples) == 6 and r.std is not None and r.std.shape == img.shape
    same = [bool((s == img).all()) for s in r.samples]
    assert 0 < sum(same) < 6  # draws mix the no-change hypothesis and corrections
    with pytest.raises(VaekitError, match="samples"):
        comp.compensate(img, method="gray-world", samples=2)


def test_the_posterior_learns_on_simulated_degradations():
    """A few optimiser steps on one batch of photo crops lower -log q(theta | y)."""
    torch.manual_seed(0)
    m = create_model("exposure-posterior", widths=[8, 8], quantiles=8, hidden=16)
    x = torch.from_numpy(np.stack([photo(seed=i)[:32, :32] for i in range(8)])).permute(0, 3, 1, 2).float()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        torch.manual_seed(1)  # the same draws each step
        out = m(x)
        loss = m.loss(x, out)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 1


def test_decoder_tangents_are_the_jacobians_top_singular_directions():
    torch.manual_seed(0)
    m = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[32], latent_dim=6).eval()
    z = torch.randn(3, 6)
    V = decoder_tangents(m, z, k=2, iters=30)
    assert V.shape == (3, 2, 6)
    assert torch.allclose(V @ V.transpose(1, 2), torch.eye(2).expand(3, 2, 2), atol=1e-5)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: m.likelihood.mean(m.decode(v[None])).flatten(), z[i])
        _, S, Vh = torch.linalg.svd(J, full_matrices=False)
        assert S[0] > 1.05 * S[1]  # a distinct top direction (this seed), so its sign-free match is meaningful
        assert abs(float(Vh[0] @ V[i, 0])) > 0.999
        assert float(torch.linalg.svdvals(Vh[:2] @ V[i].T).min()) > 0.99  # the same top-2 subspace


def test_tangent_variants_follow_the_directions_that_move_the_image_most():
    torch.manual_seed(0)
    m = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[32], latent_dim=6).eval()
    x = torch.rand(4, 1, 8, 8)
    t0 = tangent_variants(m, x, 3, strength=0.0, seed=2)
    t1 = tangent_variants(m, x, 3, strength=1.0, seed=2, k=2)
    assert t1.shape == (4, 3, 1, 8, 8) and 0 <= float(t1.min()) and float(t1.max()) <= 1
    assert torch.allclose(t0[:, 0], t0[:, 2])  # strength 0: the reconstruction
    assert torch.equal(t1, tangent_variants(m, x, 3, strength=1.0, seed=2, k=2))  # seeded
    # a latent step of the same length moves the image further along the decoder's strongest directions
    mu = m.posterior(x)[0].detach()
    g = torch.Generator().manual_seed(0)
    rand = torch.nn.functional.normalize(torch.randn(mu.shape, generator=g), dim=1)
    top = decoder_tangents(m, mu, k=1)[:, 0]
    dec = lambda z: m.likelihood.mean(m.decode(z))  # noqa: E731
    with torch.no_grad():
        moved = [float((dec(mu + 0.5 * d) - dec(mu)).pow(2).sum()) for d in (rand, top)]
    assert moved[1] > 1.5 * moved[0]
    with pytest.raises(VaekitError, match="strength"):
        tangent_variants(m, x, 2, strength=3.5)


def test_bench_augment_pieces_on_synthetic_digits():
    from vaekit.bench.augment import SmallCNN, accuracy, few_label_subset
    from vaekit.bench.augment import run_arms as run

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 30)
    x = np.zeros((300, 1, 28, 28), np.float32)
    for i, c in enumerate(labels):  # class c: a bar at row 2c, a learnable toy problem
        x[i, 0, 2 * c + 4 : 2 * c + 7, 4:24] = 1.0
        x[i, 0] += rng.normal(0, 0.05, (28, 28)).astype(np.float32)
    idx = few_label_subset(labels, 3, seed=1, pool=200)
    assert len(idx) == 30 and set(labels[idx]) == set(range(10)) and idx.max() < 200
    assert SmallCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    torch.manual_seed(0)
    vae = create_model("mlp-vae", image_shape=(1, 28, 28), hidden=[32], latent_dim=4)
    per_seed, summary = run(
        vae,
        x,
        labels,
        x[200:],
        labels[200:],
        seeds=[0, 1],
        per_class=3,
        steps=12,
        variants=2,
        strength=0.5,
        pool=200,
        generated=50,
        neighbours=3,
        prior_pool=40,
        log=lambda *a: None,
    )
    assert len(per_seed) == 2 and summary["none"]["mean"] > 50  # the toy problem is learnt
    assert set(summary) >= {
        "none",
        "classical",
        "vae",
        "vae+classical",
        "tangent",
        "tangent+classical",
        "gen",
        "gen+classical",
        "nbr",
        "vae+classical - classical",
        "tangent - none",
        "gen - none",
        "nbr - none",
    }
    assert all(0 <= r["gen_kept"] <= 50 for r in per_seed)
    assert 0 <= accuracy(SmallCNN(), x[:10], labels[:10]) <= 1


def test_api_augment_tensor_labels_and_paths(tmp_path):
    import vaekit

    torch.manual_seed(0)
    vae = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[16], latent_dim=3)
    x = torch.rand(2, 1, 8, 8)
    v = vaekit.augment(x, 3, strength=1.0, model=vae, seed=5)
    assert v.shape == (2, 3, 1, 8, 8) and torch.equal(v, vaekit.augment(x, 3, strength=1.0, model=vae, seed=5))
    assert not torch.equal(v[:, 0], v[:, 1])  # the variants differ from each other
    nb = vaekit.augment(x, 2, model=vae, method="neighbours", pool=50, seed=1)
    assert nb.shape == (2, 2, 1, 8, 8) and not torch.equal(nb[:, 0], nb[:, 1])
    with pytest.raises(VaekitError, match="unknown augmentation method"):
        vaekit.augment(x, 2, model=vae, method="mixup")
    cvae = create_model("cvae", image_shape=(1, 8, 8), hidden=[16], latent_dim=3, num_classes=4)
    a = vaekit.augment(x, 2, model=cvae, labels=[0, 3], seed=1)
    b = vaekit.augment(x, 2, model=cvae, labels=[1, 2], seed=1)
    assert a.shape == (2, 2, 1, 8, 8) and not torch.equal(a, b)  # the label reaches the decoder
    with pytest.raises(VaekitError, match="class-conditional"):
        vaekit.augment(x, 2, model=vae, labels=[0, 1])
    with pytest.raises(VaekitError, match="output"):
        vaekit.augment(tmp_path, 2, model=vae)
    assert callable(vaekit.enhance.apply_ops) and callable(vaekit.compensate)


def test_prior_pool_finds_the_nearest_samples_in_latent_space():
    from vaekit.tasks.augment import PriorPool, latent_neighbours

    torch.manual_seed(0)
    vae = create_model("mlp-vae", image_shape=(1, 8, 8), hidden=[16], latent_dim=4)
    state = torch.random.get_rng_state()
    pool = PriorPool(vae, 300, seed=3, chunk=128)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    assert len(pool) == 300 and pool.images.dtype == torch.uint8 and pool.images.shape == (300, 1, 8, 8)
    assert torch.equal(pool.images, PriorPool(vae, 300, seed=3).images)  # seeded, whatever the chunking
    # a sample of the pool, queried, finds itself first; the rest come in decreasing similarity
    q = torch.stack([pool.images[17], pool.images[250]]).float() / 255
    imgs, sim, idx = pool.nearest(vae, q, 5)
    assert imgs.shape == (2, 5, 1, 8, 8) and idx[:, 0].tolist() == [17, 250]
    assert torch.allclose(sim[:, 0], torch.ones(2), atol=1e-5) and bool((sim[:, :-1] >= sim[:, 1:]).all())
    assert torch.equal(imgs[0, 0], q[0])
    # brute force agrees: cosine similarity of the centred posterior means
    z = vae.posterior(q)[0] - pool.centre
    brute = torch.nn.functional.cosine_similarity(z[:, None], pool.latents[None] - pool.centre, dim=2)
    assert torch.equal(brute.topk(5, dim=1).indices, idx)
    assert latent_neighbours(vae, q, 2, pool=300, seed=3).shape == (2, 2, 1, 8, 8)
    with pytest.raises(VaekitError, match="larger than the prior pool"):
        pool.nearest(vae, q, 301)
    cvae = create_model("cvae", image_shape=(1, 8, 8), hidden=[16], latent_dim=3, num_classes=4)
    with pytest.raises(VaekitError, match="unconditional"):
        PriorPool(cvae, 10)


def test_neighbours_keep_the_folder_label_with_an_unconditional_vae(tmp_path, capsys):

    from vaekit.cli import main
    from vaekit.io import write_image
    from vaekit.samples import rendered_digits

    d = rendered_digits("17")
    write_image(tmp_path / "in" / "1" / "a.png", d[0])
    write_image(tmp_path / "in" / "7" / "b.png", d[1])
    out = tmp_path / "out"
    assert (
        main(
            [
                "augment",
                str(tmp_path / "in"),
                "-o",
                str(tmp_path / "tan"),
                "-n",
                "2",
                "--keep-label",
                "--method",
                "tangent",
                "--quiet",
            ]
        )
        == 0
    )
    rows = variant_rows(tmp_path / "tan")
    assert sorted((r["output"].split("/")[0], r["label"]) for r in rows) == [("1", "1")] * 2 + [("7", "7")] * 2
    assert all(r["method"] == "tangent" and r["strength"] == 3.0 for r in rows)
    assert (tmp_path / "tan" / rows[0]["output"]).is_file()
    assert (
        main(
            [
                "augment",
                str(tmp_path / "in"),
                "-o",
                str(out),
                "-n",
                "3",
                "--keep-label",
                "--method",
                "neighbours",
                "--pool",
                "2000",
                "--quiet",
            ]
        )
        == 0
    )
    rows = variant_rows(out)
    assert sorted((r["output"].split("/")[0], r["label"]) for r in rows) == [("1", "1")] * 3 + [("7", "7")] * 3
    assert all(r["method"] == "neighbours" and r["pool"] == 2000 and 0 <= r["pool_index"] < 2000 for r in rows)
    sims = [r["similarity"] for r in rows if r["label"] == "1"]
    assert sims == sorted(sims, reverse=True) and len({r["pool_index"] for r in rows if r["label"] == "1"}) == 3
    capsys.readouterr()
    for argv in (
        [
            "augment",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "x"),
            "--method",
            "neighbours",
            "--pool",
            "5",
            "-n",
            "6",
        ],
        ["augment", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--method", "neighbours", "--pool", "0"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vaekit: error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_cli_augment_enhance_compensate_and_bad_input(tmp_path, capsys):

    from PIL import Image

    from vaekit.cli import main
    from vaekit.io import write_image
    from vaekit.samples import rendered_digits

    src = tmp_path / "digits"
    for i, d in enumerate(rendered_digits("01")):
        write_image(src / "sub" / f"d{i}.png", d)
    out = tmp_path / "aug"
    assert main(["augment", str(src), "-o", str(out), "-n", "3", "--strength", "1", "--seed", "2", "--quiet"]) == 0
    rows = variant_rows(out)
    assert len(rows) == 6 and {r["variant"] for r in rows} == {0, 1, 2}
    assert all((out / r["output"]).is_file() and r["output"].startswith("sub/") for r in rows)
    assert Image.open(out / rows[0]["output"]).size == (28, 28)

    img = (photo() * 255).astype(np.uint8)
    write_image(tmp_path / "p.png", img)
    capsys.readouterr()
    assert main(["augment", str(tmp_path / "p.png"), "-o", str(tmp_path / "pa"), "-n", "1", "--quiet"]) == 0
    assert "warning: images are resized to the model's 28x28 gray input" in capsys.readouterr().err  # a photo
    assert main(["enhance", str(tmp_path / "p.png"), "-o", str(tmp_path / "e.png"), "--ops", "contrast,sharpen"]) == 0
    assert np.asarray(Image.open(tmp_path / "e.png")).std() > img.std()
    from vaekit.io import to_uint8

    write_image(tmp_path / "many" / "sub" / "q.png", img)  # a folder, as every other image command takes
    write_image(tmp_path / "many" / "p.png", img)
    assert main(["enhance", str(tmp_path / "many"), "-o", str(tmp_path / "em"), "--ops", "contrast=2", "--quiet"]) == 0
    got = np.asarray(Image.open(tmp_path / "em" / "sub" / "q.png"))
    assert np.array_equal(got, to_uint8(enhance.contrast(img, factor=2))) and (tmp_path / "em" / "p.png").is_file()
    dark = comp.degrade_exposure(img, gain=0.4, gamma=1.0, cast=(1.0, 1.0, 1.0))
    write_image(tmp_path / "dark.png", dark)
    assert (
        main(["compensate", str(tmp_path / "dark.png"), "-o", str(tmp_path / "f.png"), "--method", "percentile"]) == 0
    )
    assert np.asarray(Image.open(tmp_path / "f.png")).mean() > dark.mean() + 40
    capsys.readouterr()

    (tmp_path / "empty").mkdir()
    for argv in (
        ["augment", str(src), "-o", str(tmp_path / "x"), "-n", "0"],
        ["augment", str(src), "-o", str(tmp_path / "x"), "--strength", "3.5"],
        ["augment", str(tmp_path / "empty"), "-o", str(tmp_path / "x")],
        ["enhance", str(tmp_path / "p.png"), "-o", str(tmp_path / "x.png"), "--ops", "contrast,glow"],
        ["compensate", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vaekit: error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.png").exists()


def test_shipped_compensation_undoes_a_dark_warm_cast_and_leaves_good_photos_alone():
    """The shipped posterior on the shipped photo under a strong degradation, and on well-exposed photos."""
    import vaekit
    from vaekit.samples import sample_photo

    img = sample_photo("chelsea")
    y = comp.degrade_exposure(img, gain=0.45, gamma=1.0, cast=(1.25, 1.0, 0.8))

    def psnr(a):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - img) ** 2))

    r = vaekit.compensate(y, details=True)
    out, info = r.image, r.info
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert info["method"] == "vae" and info["changed"] and info["gain"] < 0.8  # it brightens
    assert info["cast"][0] > info["cast"][2]  # and finds red boosted against blue
    assert psnr(out) > psnr(y) + 10 and psnr(out) > psnr(BASELINES["compensate"]["gray-world"](y)) + 3
    from skimage import data

    for good in (data.astronaut(), data.coffee(), data.camera()):  # well exposed: left as they are
        r = vaekit.compensate(good, details=True)
        assert not r.changed and (r.image == good).all() and r.p_change < 0.5
    black = vaekit.compensate(np.zeros((48, 64, 3), np.uint8), details=True)  # no gain or gamma moves black
    assert not black.changed and black.info["gain"] == 1.0 and not black.image.any()


def test_keep_label_with_the_shipped_cvae(tmp_path):
    """Folder per class in and out; each variant is decoded with its folder's class."""

    from vaekit.cli import main
    from vaekit.io import write_image
    from vaekit.samples import rendered_digits

    d = rendered_digits("38")
    write_image(tmp_path / "in" / "3" / "a.png", d[0])
    write_image(tmp_path / "in" / "8" / "b.png", d[1])
    assert (
        main(
            [
                "augment",
                str(tmp_path / "in"),
                "-o",
                str(tmp_path / "out"),
                "-n",
                "2",
                "--keep-label",
                "--model",
                "cvae-mnist",
                "--quiet",
            ]
        )
        == 0
    )
    rows = variant_rows(tmp_path / "out")
    assert sorted((r["output"].split("/")[0], r["label"]) for r in rows) == [
        ("3", "3"),
        ("3", "3"),
        ("8", "8"),
        ("8", "8"),
    ]
    write_image(tmp_path / "bad" / "x" / "c.png", d[0])  # a folder that is not a class of the model
    assert (
        main(["augment", str(tmp_path / "bad"), "-o", str(tmp_path / "o2"), "--keep-label", "--model", "cvae-mnist"])
        == 2
    )
    assert (
        main(["augment", str(tmp_path / "in"), "-o", str(tmp_path / "o3"), "--keep-label"]) == 2
    )  # mnist-vae: no labels


def test_bench_compensate_on_a_tiny_set(tmp_path):
    """Every method on the same degraded bytes; JSON, table and a side-by-side picture are written."""
    import json

    from PIL import Image

    from vaekit.bench import BENCHES
    from vaekit.io import write_image

    for i in range(2):
        write_image(tmp_path / "set" / f"p{i}.png", (photo(seed=i) * 255).astype(np.uint8))
    payload = BENCHES["compensate"](
        data_root=str(tmp_path),
        sets="set",
        methods="none,percentile,gray-world",
        output=str(tmp_path / "res"),
        quiet=True,
    )["set"]
    assert payload["n_images"] == 2 and set(payload["summary"]) == {"identity", "mild", "strong"}
    summary = json.loads((tmp_path / "res" / "compensate-set.json").read_text())["summary"]
    assert summary["identity"]["none"]["psnr"] == 60.0 and summary["strong"]["none"]["psnr"] < 30
    # original, degraded, percentile, gray-world: 4 tiles of 256 px height
    w, h = Image.open(tmp_path / "res" / "compensate-set.png").size
    assert h == 256 and w == 4 * round(96 * 256 / 64)


def test_learned_compensation_of_a_gray_image():
    """A gray image gets gain and gamma (no cast) and comes back gray, in its dtype."""
    g = (comp.degrade_exposure(photo(), gain=0.6).mean(-1) * 255).astype(np.uint8)
    r = comp.compensate(g, model=tiny_posterior(0.9, gain=0.6), details=True)
    assert r.image.dtype == np.uint8 and r.image.shape == g.shape and "cast" not in r.info
    assert r.image.mean() > g.mean() + 20
