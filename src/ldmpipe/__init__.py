"""ldmpipe: a reproducible latent-diffusion pipeline."""

__version__ = "0.1.0"
