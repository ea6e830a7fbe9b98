"""The case-study layer, at the top of the package's import order: it may import anything below
it in `pyro_stein`, and nothing in `pyro_stein` imports it.

* `pyro_stein.contrib.imaging`: the imaging toolkit the generative studies share (data,
  metrics, energies, the generator and GAN baseline, the epoch loop, report files, command-line
  helpers);
* `pyro_stein.contrib.steingan`: SteinGAN, the deep-energy case study
  (``python -m pyro_stein.contrib.steingan``);
* `pyro_stein.contrib.ade`: Adaptive Density Estimation, the hybrid likelihood/adversarial case
  study (``python -m pyro_stein.contrib.ade``);
* `pyro_stein.contrib.vae`: variational autoencoders on binarized images, Pyro's ``Trace_ELBO``
  VAE and importance-weighted bounds against Stein VAE and MacVAE
  (``python -m pyro_stein.contrib.vae``).

Each study imports the toolkit, never another study.
"""
