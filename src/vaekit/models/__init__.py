"""Model families. Importing this module registers them with the registry."""

from ..registry import register
from .base import VAEBase
from .codec import CompressionVAE
from .conditional import ConditionalMLPVAE
from .denoiser import DenoisingVAE, OpponentDenoisingVAE, SelfSupervisedDenoisingVAE
from .exposure import ExposurePosterior
from .hierarchical import HierarchicalVAE
from .inpainter import InpaintingVAE
from .vae import MLPVAE, ConvVAE

register("mlp-vae", "fully connected VAE, optional dropout (any likelihood)")(MLPVAE)
register("conv-vae", "fully convolutional ResNet VAE with a spatial latent, any size divisible by its stride")(ConvVAE)
register("cvae", "class-conditional MLP VAE (label into encoder and decoder), for label-keeping augmentation")(
    ConditionalMLPVAE
)
register(
    "denoise-vae",
    "conditional VAE denoiser p(clean | noisy, sigma): U-Net context, spatial latent, "
    "any size (multiples of 8), gray or RGB",
)(DenoisingVAE)
register(
    "denoise-vae-opponent",
    "colour conditional VAE denoiser: the gray denoise-vae on the three opponent channels with learned "
    "mixing across them (starts as the opponent-channel path when initialised from a gray model)",
)(OpponentDenoisingVAE)
register(
    "denoise-vae-selfsup",
    "the conditional VAE denoiser fitted on noisy images only (recorrupted-to-"
    "recorrupted pairs, explicit Gaussian noise model as the likelihood)",
)(SelfSupervisedDenoisingVAE)
register(
    "inpaint-vae",
    "mask-aware conditional VAE inpainter p(missing | known, mask): push-pull pre-fill, "
    "dilated U-Net context, spatial latent, any size (multiples of 8), gray or RGB",
)(InpaintingVAE)
register(
    "exposure-posterior",
    "amortized posterior q(gain, gamma, cast | photo) of the exposure model, with an explicit no-change "
    "hypothesis; fitted by simulation on clean photos",
)(ExposurePosterior)
register("hvae", "two-level hierarchical MLP VAE (p(z2) p(z1|z2) p(x|z1)), the MNIST likelihood model")(HierarchicalVAE)
register("codec-factorized", "compression VAE, factorized prior (Balle 2017), GDN, variable rate by gain units")(
    lambda **kw: CompressionVAE(prior="factorized", **kw)
)
register("codec-scale-hyperprior", "compression VAE, scale hyperprior (Balle 2018), GDN, variable rate")(
    lambda **kw: CompressionVAE(prior="scale", **kw)
)
register("codec-mean-scale-hyperprior", "compression VAE, mean-scale hyperprior (Minnen 2018), GDN, variable rate")(
    lambda **kw: CompressionVAE(prior="mean-scale", **kw)
)
register(
    "codec-checkerboard",
    "compression VAE, mean-scale hyperprior with a checkerboard context (He et al. 2021), GDN, variable rate",
)(lambda **kw: CompressionVAE(prior="mean-scale", context="checkerboard", **kw))

__all__ = [
    "VAEBase",
    "MLPVAE",
    "ConvVAE",
    "HierarchicalVAE",
    "CompressionVAE",
    "DenoisingVAE",
    "OpponentDenoisingVAE",
    "SelfSupervisedDenoisingVAE",
    "InpaintingVAE",
    "ExposurePosterior",
]
