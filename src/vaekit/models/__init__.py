"""Model families. Importing this module registers them with the registry."""
from ..registry import register
from .base import VAEBase
from .hierarchical import HierarchicalVAE
from .vae import ConvVAE, MLPVAE

register("mlp-vae", "fully connected VAE, optional dropout (any likelihood)")(MLPVAE)
register("conv-vae", "fully convolutional ResNet VAE with a spatial latent, any size divisible by its stride")(ConvVAE)
register("hvae", "two-level hierarchical MLP VAE (p(z2) p(z1|z2) p(x|z1)), the MNIST likelihood model")(HierarchicalVAE)

__all__ = ["VAEBase", "MLPVAE", "ConvVAE", "HierarchicalVAE"]
