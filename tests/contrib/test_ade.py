"""Adaptive Density Estimation case study, its parts so far: the invertible map, the
image-space likelihood, dequantization and bits per dimension."""

import math

import pytest
import torch

from pyro_stein.contrib.ade.flows import bits_per_dim, dequantize, feature_space_likelihood, invertible_map


def _randomized(dim, layers, seed=0):
    torch.manual_seed(seed)
    flow = invertible_map(dim, num_layers=layers, hidden_dims=(16,)).double()
    with torch.no_grad():  # move away from the near-identity start so the test means something
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return flow


def test_inverse_and_log_determinant_against_autograd():
    flow = _randomized(dim=5, layers=3)
    y = torch.randn(4, 5, dtype=torch.float64)
    x = flow(y)
    torch.testing.assert_close(flow.inv(x), y)
    log_det = flow.log_abs_det_jacobian(y, x)
    for i in range(len(y)):
        jacobian = torch.autograd.functional.jacobian(lambda row: flow(row.unsqueeze(0)).squeeze(0), y[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian).logabsdet)


def test_image_space_likelihood_integrates_to_one():
    """A 2-D case by quadrature: the change of variables makes the density exact."""
    flow = _randomized(dim=2, layers=3, seed=1)
    likelihood = feature_space_likelihood(torch.tensor([0.3, -0.2], dtype=torch.float64), 0.7, flow)
    grid = torch.linspace(-15, 15, 1501, dtype=torch.float64)
    x = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = likelihood.log_prob(x).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1.0) < 1e-3
    # log p(x) = log N(f(x); mu, sigma) + log |det df/dx|, with f = flow.inv.
    with torch.no_grad():
        y = flow.inv(x[:10])
        expected = torch.distributions.Normal(torch.tensor([0.3, -0.2], dtype=torch.float64), 0.7).log_prob(y).sum(-1)
        expected = expected - flow.log_abs_det_jacobian(y, x[:10])
        torch.testing.assert_close(likelihood.log_prob(x[:10]), expected)


def test_bits_per_dimension_of_a_known_distribution():
    levels, dim = 17, 64
    images = torch.randint(0, levels, (100, dim)).double() / (levels - 1)
    continuous = dequantize(images, levels, torch.Generator().manual_seed(0))
    assert bool(((continuous >= 0) & (continuous < 1)).all())
    torch.testing.assert_close(torch.floor(continuous * levels), images * (levels - 1))
    # The uniform density on [0, 1]^D (log p = 0) spends log2(levels) bits per pixel.
    bits = bits_per_dim(torch.zeros(100, dtype=torch.float64), dim, levels)
    torch.testing.assert_close(bits, torch.full((100,), math.log2(levels), dtype=torch.float64))
    # A pixel-space Gaussian with no flow is the VAE's likelihood.
    pixel = feature_space_likelihood(torch.zeros(dim), 1.0, None)
    assert pixel.event_shape == (dim,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim >= 2"):
        invertible_map(1)


@pytest.mark.parametrize("variant", ["vae", "v-ade", "gan", "av-gde", "av-ade"])
def test_each_variant_trains(variant):
    import pyro

    from pyro_stein.contrib.ade.model import ADE, VARIANTS
    from pyro_stein.contrib.imaging.data import load_digits

    data = load_digits()
    x = dequantize(data.train_images.reshape(-1, 64).double(), 17, torch.Generator().manual_seed(0)).float()
    torch.manual_seed(0)
    pyro.clear_param_store()
    ade = ADE(64, variant)
    decoder_before = [p.detach().clone() for p in ade.decoder.parameters()]
    history = [ade.train_step(x[start : start + 100]) for start in range(0, 1000, 100)]
    spec = VARIANTS[variant]
    assert (ade.to_images is not None) == spec.flow
    for name, present in (("elbo", spec.likelihood), ("quality", spec.adversarial), ("discriminator", spec.adversarial)):
        assert all(math.isfinite(h[name]) == present for h in history), name
    if spec.likelihood:
        assert history[-1]["elbo"] > history[0]["elbo"]  # the coverage term improves
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, ade.decoder.parameters()))
    assert ade.generate(7).shape == (7, 64)
    with pytest.raises(ValueError, match="variant"):
        ADE(64, "wgan")
    for weight in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="adversarial_weight"):
            ADE(64, variant, adversarial_weight=weight)


def test_batch_norm_decoder():
    """On for the GAN alone by default (the adversarial-only decoder collapses without it);
    with it on, a likelihood variant's bounds in evaluation mode are per image, the same
    whether the images are scored together or one at a time."""
    from torch import nn

    from pyro_stein.contrib.ade.model import ADE

    def has_batch_norm(ade):
        return any(isinstance(m, nn.BatchNorm1d) for m in ade.decoder.modules())

    assert [has_batch_norm(ADE(64, v)) for v in ("vae", "v-ade", "gan", "av-gde", "av-ade")] == [
        False, False, True, False, False]
    torch.manual_seed(0)
    ade = ADE(64, "vae", batch_norm=True)
    assert has_batch_norm(ade)
    x = torch.rand(64, 64)
    for start in range(0, 64, 16):
        ade.train_step(x[start : start + 16])
    ade.eval()
    z = torch.randn(3, 5, 16)  # importance samples x images x latent, as in the bounds
    together = ade.likelihood(z).log_prob(x[:5])
    alone = ade.likelihood(z[:, :1]).log_prob(x[:1])
    assert together.shape == (3, 5) and torch.allclose(together[:, :1], alone)
    elbo, bound = ade.log_likelihood_bounds(x[:5], num_samples=8)
    assert elbo.shape == bound.shape == (5,) and bool(torch.isfinite(bound).all())


def test_command_line_runs_every_variant(tmp_path, capsys):
    import json

    from pyro_stein.contrib.ade.__main__ import main

    for variant in ("vae", "v-ade", "gan", "av-gde", "av-ade"):
        out = tmp_path / variant
        assert main(["--variant", variant, "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
        for name in ("samples.png", "curves.png", "checkpoint.pt", "metrics.json"):
            assert (out / name).exists(), (variant, name)
        final = json.loads((out / "metrics.json").read_text())["final"]
        assert math.isfinite(final["classifier_frechet"]) and math.isfinite(final["class_entropy"])
        if variant == "gan":
            assert final["test_bits_per_dim"] is None  # no likelihood
        else:
            # After one epoch: finite, and the importance-weighted bound no worse than the ELBO.
            assert 0.0 < final["test_bits_per_dim"] < 20.0, (variant, final["test_bits_per_dim"])
            assert final["test_bits_per_dim"] <= final["test_bits_per_dim_elbo"] + 1e-6
    out = tmp_path / "options"
    assert main(["--variant", "av-gde", "--epochs", "1", "--out", str(out), "--no-progress", "--adversarial-weight",
                 "10", "--latent-dim", "4", "--batch-norm", "on"]) == 0
    recorded = json.loads((out / "metrics.json").read_text())["model_options"]
    assert {k: recorded[k] for k in ("adversarial_weight", "latent_dim", "batch_norm")} == {
        "adversarial_weight": 10.0, "latent_dim": 4, "batch_norm": True}
    # Resuming that run with other options names the difference instead of mixing the two.
    assert main(["--variant", "av-gde", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    assert "model option adversarial_weight: 10.0 in the checkpoint's run, 1.0 in this one" in capsys.readouterr().err
    assert main(["--variant", "gan", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    assert main(["--variant", "vae", "--epochs", "1", "--out", str(tmp_path / "bad"), "--latent-dim", "0"]) == 2
    assert main(["--dataset", str(tmp_path / "absent.npz"), "--epochs", "1", "--out", str(tmp_path / "x")]) == 2


def test_old_import_paths_and_command_line_still_work(capsys):
    """``pyro_stein.ade`` and its submodules re-export the moved code, and its command line
    runs under its old name; the study imports nothing from the SteinGAN study."""
    import importlib
    import sys
    from pathlib import Path

    import pyro_stein.ade as old
    from pyro_stein.ade.__main__ import main
    from pyro_stein.contrib import ade

    assert set(old.__all__) == set(ade.__all__)
    assert all(getattr(old, name) is getattr(ade, name) for name in old.__all__)
    for submodule in ("flows", "model", "experiment"):
        module, new = importlib.import_module(f"pyro_stein.ade.{submodule}"), getattr(ade, submodule)
        assert all(getattr(module, name) is getattr(new, name) for name in module.__all__), submodule
    for module in (ade.flows, ade.model, ade.experiment, sys.modules["pyro_stein.contrib.ade.__main__"]):
        imports = [line for line in Path(module.__file__).read_text().splitlines() if "import" in line]
        assert not any("steingan" in line for line in imports), module.__name__
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m pyro_stein.ade ")
