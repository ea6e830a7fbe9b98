"""Variational autoencoders on binarized images: Pyro's ``Trace_ELBO`` VAE and IWAE against
Stein VAE (Amortized SVGD) and MacVAE (CTF distillation), same model and decoder
(``python -m pyro_stein.contrib.vae``)."""

from .experiment import METHODS, GaussianEncoder, binarize, encoder_guide, run_experiment, vae_model

__all__ = ["METHODS", "GaussianEncoder", "binarize", "encoder_guide", "run_experiment", "vae_model"]
