import math

import pytest
import torch

from vaekit import create_model, list_models
from vaekit.errors import VaekitError
from vaekit.metrics import iwae_log_likelihood
from vaekit.models.likelihoods import DiscretizedLogistic, Gaussian
from vaekit.pretrained import load_from_files, save_model

# small arguments for every registered architecture; a new name without an entry fails the test below
SMALL = {
    "mlp-vae": dict(image_shape=(1, 8, 8), hidden=[16], latent_dim=3, dropout=0.1),
    "conv-vae": dict(in_channels=1, channels=[8, 8], blocks=1, latent_channels=2, image_size=8),
    "hvae": dict(image_shape=(1, 8, 8), hidden1=[16], hidden2=[8], latent_dims=[4, 2]),
    "cvae": dict(num_classes=3, image_shape=(1, 8, 8), hidden=[16], latent_dim=3),
}


def test_every_registered_model_has_small_args():
    from conftest import CODECS  # the compression family has its own tests

    # conditional on the degraded image: test_denoise.py, test_inpaint.py; the exposure posterior: test_augment.py
    denoisers = {
        "denoise-vae",
        "denoise-vae-opponent",
        "denoise-vae-selfsup",
        "inpaint-vae",
        "exposure-posterior",
    }
    assert set(list_models()) == set(SMALL) | set(CODECS) | denoisers


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("lik", ["bernoulli", "gaussian", "logistic"])
def test_forward_loss_backward_roundtrip(name, lik, tmp_path):
    torch.manual_seed(0)
    largs = {"learned": True} if lik == "gaussian" else {}
    m = create_model(name, likelihood=lik, likelihood_args=largs, **SMALL[name])
    x = torch.rand(4, 1, 8, 8)
    if lik == "bernoulli":
        x = torch.bernoulli(x)
    elif lik == "logistic":
        x = (x * 255).round() / 255
    if getattr(m, "conditional", False):
        m.condition(torch.tensor([0, 1, 2, 0]))
    out = m(x)
    assert out["x_hat"].shape == x.shape
    assert out["mu"].shape[0] == 4
    losses = m.loss(x, out)
    assert math.isfinite(float(losses["loss"].detach())) and float(losses["kl"]) >= 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    save_model(m, tmp_path, {"name": "t"})
    m2 = load_from_files(tmp_path / "model.safetensors", tmp_path / "model.json")
    m.eval()
    if getattr(m, "conditional", False):
        m.condition(torch.tensor([0, 1, 2]))
        m2.condition(torch.tensor([0, 1, 2]))
    torch.manual_seed(1)
    a = m.sample(3)
    torch.manual_seed(1)
    assert torch.allclose(a, m2.sample(3))


def test_beta_and_iwae_objectives():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(16, 1, 8, 8))
    m = create_model("mlp-vae", beta=4.0, **SMALL["mlp-vae"])
    m.eval()
    torch.manual_seed(2)
    l4 = m.loss(x, m(x))
    assert torch.isclose(l4["loss"], -(l4["rec"] - 4.0 * l4["kl"]), rtol=1e-5)
    iw = create_model("hvae", objective="iwae", k=5, **SMALL["hvae"])
    iw.train()
    out = iw(x)
    assert out["log_px"].shape == (5, 16)
    assert math.isfinite(float(iw.loss(x, out)["loss"].detach()))


def test_iwae_bound_tightens_with_k():
    torch.manual_seed(0)
    m = create_model("hvae", **SMALL["hvae"]).eval()
    x = torch.bernoulli(torch.rand(32, 1, 8, 8))
    torch.manual_seed(0)
    elbo = float(m.log_weights(x, 200).mean())
    ll1 = float(iwae_log_likelihood(m, x, k=1).mean())
    ll200 = float(iwae_log_likelihood(m, x, k=200, chunk=64).mean())
    assert ll200 > elbo and ll200 > ll1


def test_conv_vae_any_size_divisible_by_stride():
    m = create_model("conv-vae", **SMALL["conv-vae"])
    assert m(torch.rand(2, 1, 12, 20))["x_hat"].shape == (2, 1, 12, 20)
    with pytest.raises(ValueError, match="divisible by 4"):
        m(torch.rand(2, 1, 10, 12))


def test_discretized_logistic_is_a_distribution():
    lik = DiscretizedLogistic()
    values = torch.arange(256, dtype=torch.float32).view(256, 1, 1, 1) / 255
    for mean, log_scale in ((0.3, -3.0), (0.0, -1.0), (0.99, -5.0), (0.5, -6.5)):
        params = torch.tensor([mean, log_scale]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
        total = torch.logsumexp(lik.log_prob(params, values), 0).exp()
        assert abs(float(total) - 1.0) < 1e-3


def test_gaussian_fixed_variance_density():
    lik = Gaussian(sigma=0.5)
    x = torch.zeros(1, 1, 1, 1)
    lp = float(lik.log_prob(torch.zeros(1, 1, 1, 1), x))
    assert lp == pytest.approx(-0.5 * math.log(2 * math.pi * 0.25), rel=1e-6)


def test_unknown_model_and_bad_args():
    with pytest.raises(VaekitError, match="unknown model architecture"):
        create_model("nope")
    with pytest.raises(VaekitError, match="bad arguments"):
        create_model("mlp-vae", not_an_arg=1)
