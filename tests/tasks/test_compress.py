"""The compression VAE family, its coder, the .vkc format and the compress CLI."""

import math
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CODECS

import vaekit
from vaekit import create_model
from vaekit.entropy import container
from vaekit.entropy.coder import TableCoder, finish, new_decoder, new_encoder
from vaekit.entropy.models import PRECISION, gaussian_tables, quantize_pmf
from vaekit.errors import VaekitError
from vaekit.models.codec import IntegerHyperSynthesis
from vaekit.pretrained import load_from_files, save_model
from vaekit.tasks.compress import compress, compress_info, decompress

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


def picture(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 5.0)], axis=2)
    return np.clip(base * 255 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny mean-scale codec fitted for 60 steps, so that its rate really depends on the quality."""
    torch.manual_seed(0)
    m = create_model("codec-mean-scale-hyperprior", **CODECS["codec-mean-scale-hyperprior"])
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    x = torch.from_numpy(picture(128, 128)).permute(2, 0, 1)[None].float() / 255
    for _ in range(60):
        out = m(x.expand(4, -1, -1, -1))
        loss = m.loss(x.expand(4, -1, -1, -1), out)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp_path_factory.mktemp("codec")
    save_model(m, d, {"name": "tiny"})
    return load_from_files(d / "model.safetensors", d / "model.json"), d


@pytest.mark.parametrize("name", sorted(CODECS))
def test_forward_loss_and_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    m = create_model(name, **CODECS[name])
    x = torch.rand(2, 3, 64, 128)
    out = m(x)
    assert out["x_hat"].shape == x.shape and set(out["likelihoods"]) == (
        {"y"} if name == "codec-factorized" else {"y", "z"}
    )
    losses = m.loss(x, out)
    losses["loss"].backward()
    assert math.isfinite(float(losses["loss"].detach())) and float(losses["kl"]) > 0
    save_model(m, tmp_path, {"name": "t"})
    m2 = load_from_files(tmp_path / "model.safetensors", tmp_path / "model.json").eval()
    img = picture(64, 128)
    data = compress(img, 2, model=m2)
    rec, lat = decompress(data, model=m2, return_latents=True)
    # the decoder's latents are the encoder's, and its pixels are the model's own eval reconstruction
    r = m2.compress(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 1)
    assert torch.equal(lat[0]["y_sym"], r["latents"]["y_sym"])
    with torch.no_grad():
        ref = m2(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, quality=1)["x_hat"]
    ref = ref[0].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    assert np.abs(rec.astype(int) - ref.astype(int)).max() <= 1


def test_ms_ssim_distortion_option():
    torch.manual_seed(0)
    m = create_model("codec-scale-hyperprior", N=8, M=8, lambdas=[3.0, 30.0], distortion="ms-ssim")
    x = torch.rand(2, 3, 192, 192)
    losses = m.loss(x, m(x))
    losses["loss"].backward()
    assert math.isfinite(float(losses["loss"].detach())) and m.g_a[0].weight.grad is not None
    with pytest.raises(VaekitError, match="distortion"):
        create_model("codec-scale-hyperprior", distortion="l1")


def test_rate_grows_with_quality_and_target_bpp(trained_tiny):
    m, _ = trained_tiny
    img = picture(128, 192, seed=3)
    sizes = [len(compress(img, q, model=m)) for q in (1, 2)]
    assert sizes[0] < sizes[1]
    data, info = compress_info(img, None, target_bpp=8 * (sizes[0] + sizes[1]) / 2 / (128 * 192), model=m)
    assert info["quality"] == 1 and len(data) == sizes[0]
    data, info = compress_info(img, None, target_bpp=100.0, model=m)
    assert info["quality"] == 2
    data, info = compress_info(img, None, target_bpp=1e-4, model=m)
    assert info["quality"] == 1 and not info["target_met"]
    with pytest.raises(VaekitError, match="not both"):
        compress_info(img, None, target_bpp=1.0, target_psnr=30.0, model=m)


def test_coder_overhead_is_tiny(trained_tiny):
    m, _ = trained_tiny
    data, info = compress_info(picture(256, 256, seed=5), 2, model=m)
    assert info["payload_bits"] >= info["ideal_bits"]
    assert info["payload_bits"] - info["ideal_bits"] < 64 + 0.001 * info["ideal_bits"]  # word padding + 0.1%


@pytest.mark.parametrize("context", ["none", "checkerboard"])
def test_threads_do_not_change_bytes_latents_or_pixels(trained_tiny, context):
    m = trained_tiny[0] if context == "none" else checkerboard_from(trained_tiny[0])
    img = picture(192, 256, seed=1)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = compress(img, 2, model=m)
        dec_a1, lat_a1 = decompress(a, model=m, return_latents=True)
        torch.set_num_threads(2)
        b = compress(img, 2, model=m)
        dec_a2, lat_a2 = decompress(a, model=m, return_latents=True)
        dec_b2 = decompress(b, model=m)
        torch.set_num_threads(1)
        dec_b1 = decompress(b, model=m)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(lat_a1[0]["y_sym"], lat_a2[0]["y_sym"]) and torch.equal(lat_a1[0]["z_hat"], lat_a2[0]["z_hat"])
    assert np.array_equal(dec_a1, dec_a2) and np.array_equal(dec_b1, dec_b2) and a == b


def test_shipped_codec_decodes_photos_to_the_same_pixels_on_1_and_2_threads():
    from PIL import Image

    from vaekit.samples import sample_photo

    photos = [sample_photo("chelsea")]
    kodim = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak" / "kodim01.png"
    if kodim.is_file():  # where 0.1.0 moved a grey level in 4 pixels between 1 and 2 threads
        photos.append(np.asarray(Image.open(kodim).convert("RGB")))
    old = torch.get_num_threads()
    try:
        for img in photos:
            data = compress(img, 4)
            torch.set_num_threads(1)
            one = decompress(data)
            torch.set_num_threads(2)
            assert np.array_equal(one, decompress(data))
    finally:
        torch.set_num_threads(old)


def test_synthesis_strips_decode_the_same_pixels_on_any_thread_count(trained_tiny):
    m = trained_tiny[0]
    s = create_model(m.arch, **dict(m.arch_args, strip=8))
    s.load_state_dict(m.state_dict())
    s.eval()
    for img in (picture(192, 320, seed=3), picture(320, 128, seed=4)):  # 20 latent columns, or 20 rows: 3 strips
        data = compress(img, 2, model=s)
        assert data == compress(img, 2, model=m)  # the encoder does not change
        old = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = decompress(data, model=s)
            torch.set_num_threads(2)
            two = decompress(data, model=s)
        finally:
            torch.set_num_threads(old)
        assert np.array_equal(one, two)
        whole = decompress(data, model=m)  # the strips join without a seam: the same sums up to float rounding
        assert np.abs(one.astype(int) - whole.astype(int)).max() <= 1
    with pytest.raises(VaekitError, match="strip"):
        create_model(m.arch, **dict(m.arch_args, strip=4))


def test_other_float_paths_same_latents_pixels_within_one_level(trained_tiny):
    m, _ = trained_tiny
    data = compress(picture(128, 128, seed=2), 2, model=m)
    a, la = decompress(data, model=m, return_latents=True)
    b, lb = decompress(data, model=m, dtype=torch.float64, return_latents=True)
    assert torch.equal(la[0]["y_sym"], lb[0]["y_sym"]) and torch.equal(la[0]["z_hat"], lb[0]["z_hat"])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    with warnings.catch_warnings():  # (torch warns about TF32 on Intel GPUs when the flags change)
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):  # another convolution algorithm (native, not oneDNN)
            c, lc = decompress(data, model=m, return_latents=True)
    assert torch.equal(la[0]["y_sym"], lc[0]["y_sym"]) and torch.equal(la[0]["z_hat"], lc[0]["z_hat"])
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 1


def test_integer_hyper_synthesis_is_exact_and_order_free(trained_tiny):
    m, _ = trained_tiny
    hs = m.integer_hyper()
    z = torch.randint(-20, 21, (1, m.N, 3, 5))
    out = hs(z)
    assert out.dtype == torch.int64
    # permuting the input channels (and the first layer's weights to match) changes the summation
    # order but not a single output value
    perm = torch.randperm(m.N)
    layers = [dict(L) for L in hs.layers]
    w = layers[0]["weight"]
    layers[0]["weight"] = w[perm] if layers[0]["kind"] == "deconv" else w[:, perm]
    assert torch.equal(IntegerHyperSynthesis(layers)(z[:, perm]), out)
    # and it follows the float network it was built from (1/256 units)
    with torch.no_grad():
        ref = m.h_s(z.float()) * 256
    assert (out.double() - ref.double()).abs().max() < 0.02 * 256 + 0.02 * ref.abs().max()


def checkerboard_from(source, seed=0):
    """A checkerboard codec holding ``source``'s weights, its context switched on with random weights."""
    m = create_model("codec-checkerboard", N=source.N, M=source.M, lambdas=source.lambdas)
    m.load_state_dict(source.state_dict(), strict=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        m.ep[-1].weight.normal_(0, 0.05)
        m.ep[-1].bias.normal_(0, 0.05)
    m.eval().update()
    return m


def test_checkerboard_starts_as_the_hyperprior_it_grows_from(trained_tiny):
    src, _ = trained_tiny
    m = create_model("codec-checkerboard", N=src.N, M=src.M, lambdas=src.lambdas)
    m.load_state_dict(src.state_dict(), strict=False)
    m.eval().update()
    x = torch.from_numpy(picture(128, 192, seed=4)).permute(2, 0, 1)[None].float() / 255
    a, b = src.compress(x, 1), m.compress(x, 1)
    assert torch.equal(a["latents"]["y_sym"], b["latents"]["y_sym"])
    assert a["bits"]["y"] == pytest.approx(b["bits"]["y"])  # the two halves cost what the whole cost


def test_checkerboard_context_reads_the_anchors_and_decodes_its_latents(trained_tiny):
    m = checkerboard_from(trained_tiny[0])
    blind = checkerboard_from(trained_tiny[0])
    with torch.no_grad():
        blind.ctx.weight.zero_()  # the same model with the anchors unseen
    blind.update()
    img = picture(128, 192, seed=6)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    r, rb = m.compress(x, 1), blind.compress(x, 1)
    assert r["bits"]["y"] != rb["bits"]["y"]  # the second half's parameters follow the decoded anchors
    _, lat = decompress(compress(img, 2, model=m), model=m, return_latents=True)  # threads: the test above
    assert torch.equal(lat[0]["y_sym"], r["latents"]["y_sym"])
    # the integer means follow the float ones the model trains with
    with torch.no_grad():
        y_g = m.g_a(x) * m.log_gain[1].exp()[None, :, None, None]
        mu = m.hyper_mean(y_g)
    err = (y_g - mu - r["latents"]["y_sym"]).abs()  # within the rounding, up to the fixed-point path's error
    assert float(err.max()) < 0.5 + 0.05


def test_a_wider_codec_starts_as_the_narrower_one_and_its_new_channels_learn(trained_tiny, tmp_path):
    """init_from a codec with fewer latent channels and qualities: the old qualities give the old pixels and
    the old channels' rates; the new channels are coded, and a training step reaches their synthesis."""
    from vaekit.training.loop import init_weights

    src = checkerboard_from(trained_tiny[0])
    save_model(src, tmp_path, {"name": "narrow"})
    lambdas = (*src.lambdas, 2 * src.lambdas[-1])
    wide = create_model("codec-checkerboard", N=src.N, M=src.M + 4, lambdas=lambdas)
    note = init_weights(wide, str(tmp_path / "model.safetensors"))
    assert set(note.split("fresh: ")[1].split(", ")) == set(wide.TABLES)  # only the coding tables start fresh
    wide.eval()
    x = torch.from_numpy(picture(128, 128, seed=3)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        for q in range(src.qualities):
            a, b = src(x, q), wide(x, q)
            assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
            assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"][:, : src.M], atol=1e-6)
            assert b["bpp"] > a["bpp"]  # the new channels cost bits from the start
    g = wide.log_gain.detach()
    assert torch.allclose(g[-1, : src.M], 2 * g[-2, : src.M] - g[-3, : src.M])  # the new quality: one step more
    wide.train()
    loss = wide.loss(x, wide(x, src.qualities))["loss"]
    loss.backward()
    assert wide.g_s[0].weight.grad[src.M :].abs().sum() > 0


def test_a_post_filter_starts_as_the_codec_it_grows_from_and_learns_alone(trained_tiny, tmp_path):
    """A post-filter grown on a codec decodes its files' latents to the same pixels until it trains; it trains
    on the transforms' output without moving the transforms' gradients, and then decodes closer to the image."""
    from vaekit.training.loop import init_weights

    src = checkerboard_from(trained_tiny[0])
    save_model(src, tmp_path, {"name": "base"})
    m = create_model("codec-checkerboard", N=src.N, M=src.M, lambdas=src.lambdas, post=8)
    init_weights(m, str(tmp_path / "model.safetensors"))
    m.eval().update()
    img = picture(128, 192, seed=7)
    data = compress(img, 2, model=m)

    def payloads(d):
        return container.unpack(d, 10**8)[1]

    assert payloads(data) == payloads(compress(img, 2, model=src))
    assert np.array_equal(decompress(data, model=m), decompress(compress(img, 2, model=src), model=src))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    grads = []
    for model in (src, m):
        model.train()
        torch.manual_seed(1)
        model.zero_grad()
        model.loss(x, model(x, 1))["loss"].backward()
        grads.append(model.g_s[0].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1])  # the filter's objective does not reach the transforms
    assert m.post.out.weight.grad.abs().sum() > 0
    frozen = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("post.")}
    opt = torch.optim.Adam(m.post.parameters(), 3e-3)
    for _ in range(40):
        loss = m.loss(x, m(x.expand(4, -1, -1, -1), 1))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in frozen.items())
    after = compress(img, 2, model=m)
    assert payloads(after) == payloads(data)  # the same bitstream
    before = compress(img, 2, model=src)
    err = [np.mean((decompress(d, model=mm).astype(float) - img) ** 2) for d, mm in ((before, src), (after, m))]
    assert err[1] < 0.9 * err[0]


def test_the_weights_id_follows_the_weights_after_update(trained_tiny, tmp_path):
    """A model trained on in-process and ``update``d writes its new weights' id, so that its files decode with
    the saved weights and are refused by the old ones."""
    old = trained_tiny[0]
    m = load_from_files(trained_tiny[1] / "model.safetensors", trained_tiny[1] / "model.json")
    img = picture(64, 64, seed=3)
    first = compress(img, 2, model=m)
    with torch.no_grad():
        m.g_s[0].bias.add_(0.01)
    m.update()
    data = compress(img, 2, model=m)
    assert container.unpack(data, 10**8)[0].weights_id == m.weights_id() != old.weights_id()
    assert container.unpack(first, 10**8)[0].weights_id == old.weights_id()
    save_model(m, tmp_path, {"name": "trained-on"})
    saved = load_from_files(tmp_path / "model.safetensors", tmp_path / "model.json")
    assert np.array_equal(decompress(data, model=saved), decompress(data, model=m))
    with pytest.raises(VaekitError, match="weights"):
        decompress(data, model=old)


def rd_cost(m, img, data, quality):
    """lambda * 255^2 * MSE + bpp of a real file, the cost the encoder's search lowers."""
    mse = np.mean((decompress(data, model=m).astype(float) - img) ** 2) / 255**2
    return m.lambdas[quality - 1] * 255**2 * mse + 8 * len(data) / (img.shape[0] * img.shape[1])


@pytest.mark.parametrize("context", ["none", "checkerboard"])
def test_effort_searches_latents_that_cost_less_and_the_same_decoder_reads(trained_tiny, context):
    m = trained_tiny[0] if context == "none" else checkerboard_from(trained_tiny[0])
    img = picture(100, 150, seed=8)  # two tiles of 64 columns and a ragged one: padding costs nothing
    base = compress(img, 2, model=m, tile=64)
    searched, info = compress_info(img, 2, effort=2, model=m, tile=64)
    assert info["effort"] == 2 and info["effort_cost_change_pct"] < 0  # the search found something
    assert rd_cost(m, img, searched, 2) < rd_cost(m, img, base, 2)  # and the real file is better for it
    assert container.unpack(searched, 10**8)[0] == container.unpack(base, 10**8)[0]  # same header: format unchanged
    assert compress(img, 2, effort=2, model=m, tile=64) == searched  # a seeded search: the same file again
    fit = 8 * len(base) / (100 * 150)
    _, tb = compress_info(img, None, target_bpp=fit, effort=1, model=m, tile=64)
    assert tb["quality"] == 2 and tb["bpp"] <= fit
    with pytest.raises(VaekitError, match="effort"):
        compress(img, 2, effort=7, model=m)
    x = torch.from_numpy(picture(128, 128, seed=9)).permute(2, 0, 1)[None].float() / 255
    (y, z), (before, after) = m.refine(x, 1, 20)  # the hyper-latent is searched too, and it is what is coded
    with torch.no_grad():
        start = m._analyse_hyper(m.g_a(x) * m.log_gain[1].exp()[None, :, None, None])
    r = m.compress(x, 1, y=y, z=z)
    assert after <= before and torch.equal(r["latents"]["z_hat"], torch.round(z).to(torch.int64))
    assert z.shape == start.shape and not torch.allclose(z, start)  # searched beside y, from h_a's
    lat = m.decompress(r["strings"], r["shape"], 1)["latents"]
    assert torch.equal(lat["y_sym"], r["latents"]["y_sym"])


def test_quantized_tables_sum_exactly():
    counts = quantize_pmf(np.array([0.5, 0.25, 0.2499999]))
    assert counts.sum() == 1 << PRECISION and counts.min() >= 1 and counts.size == 4
    table, offsets, lengths = gaussian_tables()
    assert (table.long().sum(1) == 1 << PRECISION).all()


def test_table_coder_roundtrip_with_escapes():
    table, offsets, lengths = gaussian_tables()
    coder = TableCoder(table.numpy(), offsets.numpy(), lengths.numpy())
    rng = np.random.default_rng(0)
    rows = rng.integers(0, table.shape[0], 5000)
    values = rng.integers(-3, 4, 5000)
    values[:5] = [10**6, -(10**6), 12345, -7, 2**28]  # far outside any table: escaped
    enc = new_encoder()
    coder.encode(enc, values, rows)
    back = coder.decode(new_decoder(finish(enc)), rows)
    assert np.array_equal(back, values)


def test_golden_file_still_decodes():
    from PIL import Image

    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    data = (GOLDEN / "golden.vkc").read_bytes()
    header = container.unpack(data, 10**8)[0]
    assert (header.height, header.width, header.tile, header.n_tiles()) == (96, 160, 64, 6)
    expected = np.asarray(Image.open(GOLDEN / "golden-decoded.png"))
    assert np.array_equal(decompress(data, model=model), expected)


def test_golden_version_3_file_still_decodes_with_its_profile_and_alpha():
    """A committed version 3 file (scripts/make_golden_vkc.py --version-3) keeps decoding to its committed RGBA
    pixels, with the profile it stored."""
    from PIL import Image

    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    data = (GOLDEN / "golden-v3.vkc").read_bytes()
    header = container.unpack(data, 10**8)[0]
    assert data[4] == 3 and header.icc == bytes(range(256)) * 2 and (header.height, header.width) == (96, 160)
    expected = np.asarray(Image.open(GOLDEN / "golden-v3-decoded.png"))
    out = decompress(data, model=model)
    assert out.shape == (96, 160, 4) and np.array_equal(out, expected)
    assert (out[:, :24, 3] == 0).all() and (out[:, 56:, 3] == 255).all()


def golden_checkerboard():
    """The golden checkerboard codec: the tiny codec's tensors and the stored context weights."""
    from safetensors.torch import load_file

    tiny = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    model = create_model("codec-checkerboard", N=tiny.N, M=tiny.M, lambdas=tiny.lambdas)
    model.load_state_dict({**tiny.state_dict(), **load_file(GOLDEN / "checkerboard-context.safetensors")})
    return model.eval()


def test_golden_checkerboard_file_still_decodes():
    from PIL import Image

    data = (GOLDEN / "golden-checkerboard.vkc").read_bytes()
    expected = np.asarray(Image.open(GOLDEN / "golden-checkerboard-decoded.png"))
    assert np.array_equal(decompress(data, model=golden_checkerboard()), expected)
    assert data != (GOLDEN / "golden.vkc").read_bytes()  # the context changed the payload


def test_tiles_gray_float_and_odd_sizes(trained_tiny):
    m, _ = trained_tiny
    img = picture(150, 201, seed=4)
    one = decompress(compress(img, 2, model=m, tile=1024), model=m)
    tiled = decompress(compress(img, 2, model=m, tile=64), model=m)
    assert one.shape == tiled.shape == img.shape
    # independent tiles are worse at their seams, but still the same picture
    assert np.abs(one.astype(int) - tiled.astype(int)).mean() < 12
    gray = img.mean(2).astype(np.uint8)
    g = decompress(compress(gray, 2, model=m), model=m)
    assert g.shape == gray.shape and g.dtype == np.uint8
    f = decompress(compress(img.astype(np.float32) / 255, 2, model=m), model=m)
    assert np.array_equal(f, decompress(compress(img, 2, model=m), model=m))


def test_factorized_codec_pads_only_to_its_stride():
    torch.manual_seed(0)
    m = create_model("codec-factorized", **CODECS["codec-factorized"]).eval()
    patch = picture(32, 32)
    data, info = compress_info(patch, 2, model=m)
    _, lat = decompress(data, model=m, return_latents=True)
    assert lat[0]["y_sym"].shape[-2:] == (2, 2)  # 32 / 16, not 64 / 16
    assert decompress(data, model=m).shape == (32, 32, 3)


def test_gray_codec_and_16_bit_input():
    torch.manual_seed(0)
    m = create_model("codec-scale-hyperprior", N=8, M=8, lambdas=[0.003, 0.03], channels=1).eval()
    img = picture(64, 64)
    rec = decompress(compress(img[:, :, 0], 2, model=m), model=m)
    assert rec.shape == (64, 64) and rec.dtype == np.uint8
    deep = img.astype(np.uint16) * 257  # the same picture in 16 bits codes to the same file
    assert compress(deep, 1, model=m) == compress(img, 1, model=m)
    with pytest.raises(VaekitError, match="0..255"):
        compress(img.astype(np.int32) * 4, 1, model=m)


def _fuzz_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_vkc", Path(__file__).parents[2] / "scripts" / "fuzz_vkc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_coverage_guided_fuzzing_finds_no_crash():
    """A short seeded run of the atheris fuzzer (scripts/fuzz_vkc.py --coverage runs 100,000)."""
    import subprocess
    import sys

    pytest.importorskip("atheris")
    script = Path(__file__).parents[2] / "scripts" / "fuzz_vkc.py"
    r = subprocess.run(
        [sys.executable, str(script), "--coverage", "-n", "2000", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "2000 inputs" in r.stdout and "Done 2000 runs" in r.stderr
    edges = int(re.search(r"DONE\s+cov: (\d+)", r.stderr).group(1))
    assert edges > 150, edges  # the decoder's modules are instrumented (the lazy package once left them out: 83)


def test_damaged_files_are_refused_cleanly():
    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    data = (GOLDEN / "golden.vkc").read_bytes()
    counts = _fuzz_module().fuzz(data, model, 200, seed=0)  # scripts/fuzz_vkc.py runs 10,000
    assert counts["refused"] > 100
    cb = (GOLDEN / "golden-checkerboard.vkc").read_bytes()
    assert _fuzz_module().fuzz(cb, golden_checkerboard(), 200, seed=1)["refused"] > 100  # two-pass decoding too
    profiled = _fuzz_module().with_extras(data)  # version 2: a colour profile before the payloads
    assert np.array_equal(decompress(profiled, model=model), decompress(data, model=model))
    assert _fuzz_module().fuzz(profiled, model, 200, seed=2)["refused"] > 100
    cutout = _fuzz_module().with_extras(data, alpha=True)  # version 3: and an alpha plane
    assert cutout[4] == 3 and np.array_equal(decompress(cutout, model=model)[..., :3], decompress(data, model=model))
    assert _fuzz_module().fuzz(cutout, model, 200, seed=3)["refused"] > 100
    for bad, msg in (
        (b"", "magic"),
        (b"hello world, not a vkc", "magic"),
        (data[:20], "truncated"),
        (data[:-1], "checksum"),
        (data[:4] + b"\x07" + data[5:], "version"),
    ):
        with pytest.raises(VaekitError, match=msg):
            decompress(bad, model=model)
    other = create_model("codec-mean-scale-hyperprior", N=8, M=8, lambdas=[0.005, 0.05])
    with pytest.raises(VaekitError, match="weights"):
        decompress(data, model=other)
    with pytest.raises(VaekitError, match="local model"):
        decompress(data)


def test_header_sizes_are_checked_before_allocating():
    # a 2**20 x 2**20 image in 64 px tiles would ask for 2**28 tile lengths: refused from the header
    blob = container._HEAD.pack(container.MAGIC, 1, 1, b"\0" * 8, 1, 3, 1 << 20, 1 << 20, 1)
    blob += struct.pack("<I", zlib.crc32(blob))
    with pytest.raises(VaekitError, match="oversized"):
        container.unpack(blob, 10**8)
    # 10000 x 10000 (within the pixel limit) in one tile: a decoder would allocate ~10 GB for that tile
    blob = container._HEAD.pack(container.MAGIC, 1, 2, b"\0" * 8, 1, 3, 10000, 10000, 10048 // 64)
    blob += struct.pack("<I", 16) + b"\0" * 16
    blob += struct.pack("<I", zlib.crc32(blob))
    with pytest.raises(VaekitError, match="hostile"):
        container.unpack(blob, 10**8)
    with pytest.raises(VaekitError, match="at most 4096"):
        compress(np.zeros((64, 64, 3), np.uint8), 1, tile=8192)
    with pytest.raises(VaekitError, match="quality must be an integer from 1 to 8, got 3.5"):
        compress(np.zeros((64, 64, 3), np.uint8), 3.5)  # not silently quality 3


def test_a_colour_profile_travels_in_a_version_2_file_and_its_length_is_checked(trained_tiny):
    """Files without a profile stay version 1; one with it decodes with it; damaged or bloated ones are refused."""
    m, _ = trained_tiny
    img = picture(64, 64, seed=2)
    icc = bytes(range(256)) * 3
    plain, kept = compress(img, 1, model=m), compress(img, 1, model=m, icc=icc)
    assert plain[4] == 1 and kept[4] == 2 and container.unpack(plain, 10**8)[0].icc is None
    header = container.unpack(kept, 10**8)[0]
    assert header.icc == icc and np.array_equal(decompress(kept, model=m), decompress(plain, model=m))
    n = header.n_tiles()
    at = container._HEAD.size + 4 * n  # the profile's length field

    def resealed(body):
        return body + struct.pack("<I", zlib.crc32(body))

    body = bytearray(kept[:-4])
    body[at : at + 4] = struct.pack("<I", len(kept))  # longer than the file
    with pytest.raises(VaekitError, match="colour profile length"):
        container.unpack(resealed(bytes(body)), 10**8)
    bomb = zlib.compress(b"\0" * (40 * container.MAX_PROFILE), 9)  # a few KB that inflate to 40 MB
    head, tail = kept[:at], kept[at + 4 + struct.unpack_from("<I", kept, at)[0] : -4]
    with pytest.raises(VaekitError, match="does not inflate"):
        container.unpack(resealed(head + struct.pack("<I", len(bomb)) + bomb + tail), 10**8)
    body = bytearray(kept[:-4])
    body[4] = 4
    with pytest.raises(VaekitError, match="version 4 is not supported"):
        container.unpack(resealed(bytes(body)), 10**8)


def test_an_alpha_plane_travels_losslessly_in_a_version_3_file_and_is_checked(trained_tiny):
    """A cut-out keeps its transparency exactly, beside the same colour pixels; a damaged plane is refused."""
    m, _ = trained_tiny
    img = picture(64, 80, seed=3)
    alpha = np.zeros((64, 80), np.uint8)
    alpha[8:56, 10:70] = 255
    alpha[30:34] = np.arange(80, dtype=np.uint8)  # a soft edge too
    rgba = np.dstack([img, alpha])
    data, info = compress_info(rgba, 1, model=m)
    plain = compress(img, 1, model=m)
    assert data[4] == 3 and plain[4] == 1 and info["alpha_bits"] > 0
    assert info["payload_bits"] == 8 * (len(plain) - len(container.pack(container.unpack(plain, 10**8)[0], [b""])))
    out = decompress(data, model=m)
    assert out.shape == (64, 80, 4) and np.array_equal(out[..., 3], alpha)
    seen = alpha > 0
    err = [np.abs(o[..., :3].astype(int) - img)[seen].mean() for o in (out, decompress(plain, model=m))]
    assert err[0] < 1.1 * err[1]  # where it shows, the colour is coded as well as without the plane
    gray = decompress(compress(np.dstack([img[..., 0], alpha]), 1, model=m), model=m)
    assert gray.shape == (64, 80, 2) and np.array_equal(gray[..., 1], alpha)
    opaque = compress(np.dstack([img, np.full((64, 80), 255, np.uint8)]), 1, model=m)
    assert opaque == plain  # an alpha channel that hides nothing is not kept: the file is version 1
    floats = decompress(compress(rgba / 255.0, 1, model=m), model=m)  # any dtype, as the task contract reads
    assert np.array_equal(floats[..., 3], alpha)
    both = compress(rgba, 1, model=m, icc=bytes(range(256)))
    header = container.unpack(both, 10**8)[0]
    assert both[4] == 3 and header.icc == bytes(range(256)) and container.alpha_plane(header).shape == (64, 80)

    def resealed(body):
        return body + struct.pack("<I", zlib.crc32(body))

    at = container._HEAD.size + 4 * header.n_tiles() + 4 + len(zlib.compress(header.icc, 9))  # the plane's length
    k = struct.unpack_from("<I", both, at)[0]
    head, png, tail = both[:at], both[at + 4 : at + 4 + k], both[at + 4 + k : -4]
    wrong = container.alpha_png(np.zeros((64, 81), np.uint8))  # another size: refused from its header
    with pytest.raises(VaekitError, match="not an 8-bit gray PNG of the image's size"):
        container.unpack(resealed(head + struct.pack("<I", len(wrong)) + wrong + tail), 10**8)
    broken = png[:40] + bytes(len(png) - 40)  # the right header over damaged pixels: refused before the tiles
    with pytest.raises(VaekitError, match="alpha plane does not decode"):
        decompress(resealed(head + struct.pack("<I", len(broken)) + broken + tail), model=m)
    with pytest.raises(VaekitError, match="alpha plane length"):
        container.unpack(resealed(head + struct.pack("<I", len(both)) + png + tail), 10**8)


def test_api_and_cli(trained_tiny, tmp_path, capsys):
    from PIL import Image

    from vaekit.cli import main

    m, run = trained_tiny
    img = picture(64, 96, seed=6)
    assert vaekit.decompress(vaekit.compress(img, quality=1, model=m), model=m).shape == img.shape
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(img[:, :, 0]).save(tmp_path / "in" / "b.png")
    assert (
        main(
            [
                "compress",
                str(tmp_path / "in"),
                "-o",
                str(tmp_path / "out"),
                "--model",
                str(run),
                "--quality",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.vkc")) == [
        "b.vkc",
        "sub/a.vkc",
    ]
    assert main(["decompress", str(tmp_path / "out"), "-o", str(tmp_path / "rec"), "--model", str(run), "--quiet"]) == 0
    assert np.asarray(Image.open(tmp_path / "rec" / "b.png")).shape == (64, 96)
    alpha = np.where(np.arange(96) < 40, 0, 255).astype(np.uint8)[None].repeat(64, 0)
    Image.fromarray(np.dstack([img, alpha])).save(tmp_path / "cut.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped
        argv = [
            "compress",
            str(tmp_path / "cut.png"),
            "-o",
            str(tmp_path / "cut.vkc"),
            "--model",
            str(run),
            "--quality",
            "1",
        ]
        assert main(argv) == 0
        assert (
            main(["decompress", str(tmp_path / "cut.vkc"), "-o", str(tmp_path / "cut2.png"), "--model", str(run)]) == 0
        )
    back = Image.open(tmp_path / "cut2.png")
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], alpha)
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "cut.vkc"), "--info"]) == 0  # the header, nothing decoded
    line = capsys.readouterr().out
    assert ".vkc version 3, 96x64 RGB, quality 1 of a local model" in line and "alpha plane (" in line
    (tmp_path / "out" / "junk.vkc").write_bytes(b"not a vkc")
    assert main(["decompress", str(tmp_path / "out"), "--info"]) == 3  # a folder: the others are still read
    out, err = capsys.readouterr()
    assert "b.vkc: .vkc version 1, 96x64 gray" in out and "junk.vkc: not a vaekit .vkc file" in err
    (tmp_path / "out" / "junk.vkc").unlink()
    assert main(["decompress", str(tmp_path / "cut.vkc")]) == 2  # neither -o nor --info
    assert (
        main(["compress", str(src / "a.png"), "-o", str(tmp_path / "a.vkc"), "--model", str(run), "--target-bpp", "2"])
        == 0
    )
    capsys.readouterr()
    argv = ["compress", str(src / "a.png"), "-o", str(tmp_path / "a.vkc"), "--model", str(run), "--target-psnr", "90"]
    assert main(argv) == 0  # a PSNR target that no quality reaches: the top one, said so, with what it reached
    out, err = capsys.readouterr()
    assert out.strip().endswith(" dB") and "do not meet 90.0 dB even at the top quality 2" in err
    argv = ["compress", str(src / "a.png"), "-o", str(tmp_path / "a.vkc"), "--model", str(run), "--target-bpp", "900"]
    assert main(argv) == 0  # a target above the top quality's rate is said so, not silently under-run
    assert "at the top quality 2, under the 900.0 bpp asked" in capsys.readouterr().err
    # bad input: one line, exit 2, nothing half-written
    (tmp_path / "junk.vkc").write_bytes(b"\x89VKC" + b"\0" * 40)
    for argv in (
        ["compress", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.vkc"), "--model", str(run)],
        ["compress", str(src / "a.png"), "-o", str(tmp_path / "x.vkc"), "--model", str(run), "--quality", "9"],
        ["compress", str(src / "a.png"), "-o", str(tmp_path / "x.vkc"), "--model", str(run), "--effort", "4"],
        ["decompress", str(tmp_path / "junk.vkc"), "-o", str(tmp_path / "x.png"), "--model", str(run)],
        ["decompress", str(src / "a.png"), "-o", str(tmp_path / "x.png")],
    ):
        assert main(argv) == 2
    assert not list(tmp_path.glob("x.*"))


def test_shipped_codec_on_the_sample_photo():
    from vaekit.pretrained import SHIPPED
    from vaekit.samples import sample_photo

    if "codec-hyperprior" not in SHIPPED:
        pytest.skip("no codec shipped in this build")
    img = sample_photo("chelsea")
    sizes, psnrs = [], []
    for q in (1, 4, 8):
        data = compress(img, q)  # the shipped codec by default, decoded by its model id
        rec = decompress(data)
        assert container.unpack(data, 10**8)[0].model_id == 8
        sizes.append(len(data))
        psnrs.append(10 * np.log10(255**2 / np.mean((rec.astype(float) - img) ** 2)))
    assert sizes[0] < sizes[1] < sizes[2] and psnrs[0] < psnrs[1] < psnrs[2]
    assert psnrs[1] > 28
    # --target-psnr: the smallest quality whose decoded image reaches it, and the PSNR it reached
    target = (psnrs[0] + psnrs[1]) / 2
    data, info = compress_info(img, None, target_psnr=target)
    assert 2 <= info["quality"] <= 4 and info["target_met"] and info["psnr"] >= target
    below = decompress(compress(img, info["quality"] - 1)).astype(float)
    assert 10 * np.log10(255**2 / np.mean((below - img) ** 2)) < target
    data, info = compress_info(img, None, target_psnr=60.0)
    assert info["quality"] == 8 and not info["target_met"] and info["psnr"] == pytest.approx(psnrs[2])
    # a cut-out whose transparent part still holds the backdrop: that colour is not paid for, the rest is as good
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    alpha = np.where(np.hypot(yy - 150, xx - 225) < 120, 255, 0).astype(np.uint8)
    cut, info = compress_info(np.dstack([img, alpha]), 4)
    rec, seen = decompress(cut), alpha > 0
    assert info["payload_bits"] < 0.8 * 8 * sizes[1] and np.array_equal(rec[..., 3], alpha)
    err = [np.mean((r[..., :3][seen].astype(float) - img[seen]) ** 2) for r in (rec, decompress(compress(img, 4)))]
    assert err[0] < 1.1 * err[1]


@pytest.mark.parametrize(
    "release,model_id",
    [(f"codec-hyperprior-r{i}", i) for i in range(1, 8)],
)
def test_files_of_earlier_codec_releases_still_decode(release, model_id):
    """Retrained weights get a new model id; an earlier release, once installed, decodes its files."""
    from vaekit.pretrained import installed_weights
    from vaekit.samples import sample_photo

    if not installed_weights(release).is_file():
        pytest.skip(f"{release} is a separate download, not installed here")
    img = sample_photo("chelsea")[:128, :192]
    old = compress(img, 3, model=release)
    new = compress(img, 3)
    assert container.unpack(old, 10**8)[0].model_id == model_id and container.unpack(new, 10**8)[0].model_id == 8
    assert old != new
    rec_old, rec_new = decompress(old), decompress(new)  # each found by the id in its header
    assert rec_old.shape == rec_new.shape == img.shape and not np.array_equal(rec_old, rec_new)
    with pytest.raises(VaekitError, match="written with weights"):
        decompress(old, model="codec-hyperprior")


def test_downloadable_weights_are_refused_clearly_until_installed_and_checked(tmp_path, monkeypatch, capsys):
    """Without its tensors a downloadable model names its download; installing checks the sha256 of the file."""
    from vaekit.cli import main
    from vaekit.pretrained import installed_weights, load_pretrained

    monkeypatch.setenv("VAEKIT_MODELS_DIR", str(tmp_path / "models"))
    if installed_weights("codec-hyperprior-r1").parent.name != "weights":
        pytest.skip("this build has the first codec release in the package")
    with pytest.raises(VaekitError, match="not installed"):
        load_pretrained("codec-hyperprior-r1")
    from vaekit.training.loop import init_weights

    with pytest.raises(VaekitError, match="not installed .* vaekit models --install"):  # fine-tuning from it, too
        init_weights(create_model("codec-mean-scale-hyperprior", N=8, M=8, lambdas=[0.01]), "codec-hyperprior-r1")
    assert main(["models"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("codec-hyperprior-r1 ")]
    assert len(listed) == 1 and "[download, not installed]" in listed[0]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not the weights")
    assert main(["models", "--install", f"codec-hyperprior-r1={bad}"]) == 2
    assert "is not the codec-hyperprior-r1 weights" in capsys.readouterr().err
    assert not installed_weights("codec-hyperprior-r1").exists()


def test_the_compression_benchmark_reads_photos_val_halved(tmp_path):
    """A folder with SPLITS.tsv is the photos set: its val rows, area-downscaled by 2 (2x2 means)."""
    from PIL import Image

    from vaekit.bench.compress import _load_images

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "SPLITS.tsv").write_text("file\tsplit\na.png\ttrain\nb.png\tval\nc.png\tval\n")
    name, files, imgs = _load_images(tmp_path, None)
    assert name == "photos-val" and [Path(f).name for f in files] == ["b.png", "c.png"]
    full = np.asarray(Image.open(tmp_path / "b.png"), dtype=np.float64)
    assert imgs[0].shape == (16, 24, 3)
    assert np.abs(imgs[0] - full.reshape(16, 2, 24, 2, 3).mean((1, 3))).max() <= 0.5 + 1e-9


def test_the_compression_benchmark_measures_effort_levels(trained_tiny, tmp_path):
    """Each effort is a curve of its own, with its BD-rate against effort 0; no file costs more than effort 0's."""
    from PIL import Image

    from vaekit.bench.compress import run

    m, path = trained_tiny
    for i in range(2):
        Image.fromarray(picture(176, 176, seed=10 + i)).save(tmp_path / f"{i}.png")  # MS-SSIM needs > 160
    out = tmp_path / "results"
    payload = run(data_dir=str(tmp_path), model=str(path), codecs="webp", efforts="1", output=str(out), quiet=True)
    res = payload["results"]
    assert set(res) == {"vaekit", "vaekit effort 1", "webp"} and payload["efforts"]["1"]["steps"] > 0
    for q, lam in zip(("1", "2"), m.lambdas):
        for a, b in zip(res["vaekit"][q]["images"], res["vaekit effort 1"][q]["images"]):
            cost = lambda r: lam * 255**2 * 10 ** (-r["psnr"] / 10) + r["bpp"]  # noqa: E731
            assert cost(b) <= cost(a) + 1e-9
    assert "vs_vaekit" in payload["bd_rate"]["vaekit effort 1"]
    table = (out / f"compress-{tmp_path.name}.md").read_text()
    assert "## Encode effort" in table
    header, _, *rows = table.split("## vaekit codec per quality")[1].split("\n\n")[2].splitlines()
    col = header.split(" | ").index("bits vs WebP")
    cells = [r.split(" | ")[col] for r in rows]
    assert len(cells) == len(m.lambdas) and all(c == "—" or c.endswith("%") for c in cells)
    Image.fromarray(picture(176, 150, seed=3)).save(tmp_path / "2.png")  # under MS-SSIM's least side: left out
    with pytest.warns(UserWarning, match="1 of 3 images left out"):
        again = run(data_dir=str(tmp_path), model=str(path), codecs="", output=str(out), quiet=True)
    assert again["n_images"] == 2
    (tmp_path / "small").mkdir()
    Image.fromarray(picture(176, 150, seed=3)).save(tmp_path / "small" / "2.png")
    with pytest.raises(VaekitError, match="over 160 px"):
        run(data_dir=str(tmp_path / "small"), model=str(path), codecs="", output=str(out), quiet=True)


def test_post_joint_trains_the_transforms_through_the_fixed_filter(trained_tiny):
    """With ``post_joint`` the transforms learn the rate-distortion cost of the filtered image, so their gradient
    changes, while the filter still learns from its own objective alone."""
    src = checkerboard_from(trained_tiny[0])
    x = torch.from_numpy(picture(64, 64, seed=5)).permute(2, 0, 1)[None].float() / 255
    grads = {}
    for joint in (False, True):
        m = create_model("codec-checkerboard", N=src.N, M=src.M, lambdas=src.lambdas, post=8, post_joint=joint)
        m.load_state_dict(src.state_dict(), strict=False)
        torch.manual_seed(2)
        for p in m.post.parameters():
            p.data.normal_(0, 0.05)  # a filter that has learned something
        m.train()
        torch.manual_seed(1)
        m.loss(x, m(x, 1))["loss"].backward()
        grads[joint] = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    assert all(torch.allclose(grads[False][k], grads[True][k]) for k in grads[True] if k.startswith("post."))
    assert not torch.allclose(grads[False]["g_s.0.weight"], grads[True]["g_s.0.weight"])
    assert not torch.allclose(grads[False]["g_a.0.weight"], grads[True]["g_a.0.weight"])


def test_bd_rate_and_its_points_agree_on_a_scaled_curve():
    """A curve that needs 10% fewer bits at every PSNR is -10% by BD-rate over the PSNRs both cover, and at each
    PSNR inside them; outside a curve's range it has no point."""
    from vaekit.metrics import bd_rate, rate_at

    rate = [0.2, 0.4, 0.8, 1.6]
    ref, better = [28.0, 31.0, 34.0, 36.0], [28.5, 31.5, 34.5, 36.5]  # b's PSNRs higher at the same rates
    bd, (lo, hi) = bd_rate(rate, ref, [r * 0.9 for r in rate], ref)
    assert bd == pytest.approx(-10.0) and (lo, hi) == (28.0, 36.0)
    for p in (28.0, 29.7, 33.2, 36.0):
        assert rate_at([r * 0.9 for r in rate], ref, p) / rate_at(rate, ref, p) == pytest.approx(0.9)
    assert rate_at(rate, ref, 31.0) == pytest.approx(0.4) and rate_at(rate, ref, 36.1) is None
    assert bd_rate(rate, ref, rate, better)[0] < 0 and rate_at(rate, better, 31.0) < rate_at(rate, ref, 31.0)
    assert bd_rate(rate, ref, rate, [40.0, 41.0, 42.0, 43.0]) == (None, None)
