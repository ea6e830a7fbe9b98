"""Local latents: the data plates found in a model's trace, the refusals, and the batched
log joint with each row's conditional score."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from local_models import grouped_model

from pyro_stein.glue.local import LocalLogDensity, LocalStructure


def vae_like(x):
    with pyro.plate("data", len(x), subsample_size=8) as rows:
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True) * torch.ones(4), scale.unsqueeze(-1)).to_event(1), obs=x[rows])


def test_the_data_plate_and_its_sites_are_found():
    x = torch.randn(30, 4)
    structure = LocalStructure.from_model(vae_like, (x,), {})
    (plate,) = structure.plates.values()
    assert (plate.name, plate.size, plate.subsample_size, plate.observed) == ("data", 30, 8, ("x",))
    assert [(s.name, s.row_size) for s in plate.sites] == [("z", 3), ("scale", 1)]
    assert structure.global_sites == ()
    batch = structure.minibatch(vae_like, (x,), {})["data"]
    assert batch.observations.shape == (8, 4) and torch.equal(batch.observations, x[batch.indices])
    assert batch.scale == 30 / 8


def test_the_scores_are_each_rows_conditional_score():
    x = torch.randn(30, 4)
    structure = LocalStructure.from_model(vae_like, (x,), {})
    batch = structure.minibatch(vae_like, (x,), {})
    latents = torch.randn(5, 8, 4, dtype=torch.float64).float()
    log_p, scores = LocalLogDensity(vae_like, structure).log_prob_and_scores({"data": latents}, batch, (x,), {})
    # By hand: z unconstrained, scale = exp(u) with its log-Jacobian u.
    z, u = latents[..., :3], latents[..., 3:].clone().requires_grad_(True)
    z = z.clone().requires_grad_(True)
    rows = x[batch["data"].indices]
    terms = (
        dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        + dist.LogNormal(0.0, 1.0).log_prob(u.exp()).squeeze(-1) + u.squeeze(-1)
        + dist.Normal(z.sum(-1, keepdim=True), u.exp()).log_prob(rows).sum(-1)
    )
    grad_z, grad_u = torch.autograd.grad(terms.sum(), [z, u])
    torch.testing.assert_close(scores["data"], torch.cat([grad_z, grad_u], -1))
    torch.testing.assert_close(log_p, terms.detach().sum(-1) * 30 / 8)


def test_nested_plates_belong_to_the_row_of_the_data_plate():
    y = torch.randn(40, 3)
    structure = LocalStructure.from_model(grouped_model, (y,), {})
    (plate,) = structure.plates.values()
    assert (plate.name, plate.dim, plate.latent_size) == ("groups", -2, 1)
    batch = structure.minibatch(grouped_model, (y,), {})
    assert batch["groups"].observations.shape == (16, 3)
    latents = torch.zeros(2, 16, 1)
    _, scores = LocalLogDensity(grouped_model, structure).log_prob_and_scores({"groups": latents}, batch, (y,), {})
    torch.testing.assert_close(scores["groups"][0, :, 0], y[batch["groups"].indices].sum(-1))


def test_a_local_latent_without_observations_is_refused_naming_it():
    def model(x):
        with pyro.plate("codes", 100, subsample_size=10):
            pyro.sample("code", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"'code'.*subsampled plate 'codes'.*no observed site"):
        LocalStructure.from_model(model, (torch.tensor(0.0),), {})

    def unsubsampled(x):
        with pyro.plate("codes", 10):
            pyro.sample("code", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"\['code'\] lie in plate 'codes', which holds no observed site"):
        LocalStructure.from_model(unsubsampled, (torch.tensor(0.0),), {}, local_plates=("codes",))


def test_bad_plate_names_and_discrete_latents_are_refused():
    x = torch.randn(30, 4)
    with pytest.raises(ValueError, match="no such plate"):
        LocalStructure.from_model(vae_like, (x,), {}, local_plates=("rows",))

    def discrete(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    with pytest.raises(ValueError, match="'c' is discrete"):
        LocalStructure.from_model(discrete, (torch.randn(5),), {})


def test_each_rows_own_terms():
    x = torch.randn(30, 4)
    structure = LocalStructure.from_model(vae_like, (x,), {})
    batch = structure.minibatch(vae_like, (x,), {})
    density = LocalLogDensity(vae_like, structure)
    latents = torch.randn(5, 8, 4)
    total, _ = density.log_prob_and_scores({"data": latents}, batch, (x,), {})
    rows, _ = density.log_prob_and_scores({"data": latents}, batch, (x,), {}, per_row="data")
    assert rows.shape == (5, 8)
    torch.testing.assert_close(rows.sum(-1) * 30 / 8, total)
    # A row's terms depend on its own latents only.
    moved = latents.clone()
    moved[:, 0] += 1.0
    rows_moved, _ = density.log_prob_and_scores({"data": moved}, batch, (x,), {}, per_row="data")
    torch.testing.assert_close(rows_moved[:, 1:], rows[:, 1:])
    assert not torch.allclose(rows_moved[:, 0], rows[:, 0])
