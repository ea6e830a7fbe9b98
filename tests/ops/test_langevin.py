"""Tests of `pyro_stein.ops.langevin`: the unadjusted and Metropolis-adjusted Langevin flow."""

import math

import pytest
import torch

from pyro_stein.ops.langevin import langevin_flow, langevin_proposal, mala_log_acceptance

DTYPE = torch.float64


def gaussian_target(mean, cov):
    """``z -> (log N(z; mean, cov) up to a constant, score, valid)``."""
    precision = torch.linalg.inv(cov)

    def log_prob_and_score(z):
        centered = z - mean
        score = -centered @ precision
        log_p = 0.5 * (centered * score).sum(-1)
        return log_p, score, torch.ones(len(z), dtype=torch.bool)

    return log_prob_and_score


def standard_normal(z):
    return -0.5 * z.pow(2).sum(-1), -z, torch.ones(len(z), dtype=torch.bool)


def half_space(z):
    """N(0, I) restricted to ``z_0 > 0``: ``-inf`` and a NaN score elsewhere."""
    inside = z[:, 0] > 0
    log_p = torch.where(inside, -0.5 * z.pow(2).sum(-1), torch.full_like(z[:, 0], -math.inf))
    score = torch.where(inside.unsqueeze(-1), -z, torch.full_like(z, math.nan))
    return log_p, score, inside


def _draws(mean, cov, n, generator):
    chol = torch.linalg.cholesky(cov)
    return mean + torch.randn(n, len(mean), dtype=DTYPE, generator=generator) @ chol.T


MEAN = torch.tensor([1.0, -2.0], dtype=DTYPE)
COV = torch.tensor([[2.0, 0.9], [0.9, 0.7]], dtype=DTYPE)


def _moment_errors(z, mean, cov):
    """Errors of the sample mean and covariance in standard errors (exact for a Gaussian)."""
    n = len(z)
    mean_se = (cov.diagonal() / n).sqrt()
    # Var of a sample covariance entry of a Gaussian: (S_ii S_jj + S_ij^2) / n.
    cov_se = ((cov.diagonal().outer(cov.diagonal()) + cov.pow(2)) / n).sqrt()
    return ((z.mean(0) - mean) / mean_se).abs().max(), ((torch.cov(z.T) - cov) / cov_se).abs().max()


def test_mala_leaves_the_gaussian_invariant():
    generator = torch.Generator().manual_seed(1)
    start = _draws(MEAN, COV, 20000, generator)
    # A large step: the flow moves far, and ULA at this step is visibly biased (below).
    run = langevin_flow(gaussian_target(MEAN, COV), start, 20, 0.8, generator=generator)
    mean_err, cov_err = _moment_errors(run.particles, MEAN, COV)
    # Every chain is marginally an exact draw at every step: 5 standard errors.
    assert mean_err < 5 and cov_err < 5
    assert 0.3 < run.acceptance < 0.99
    assert (run.particles != start).any(-1).float().mean() > 0.9

    # The same check on the unadjusted flow fails: the test has the power to see a bias.
    ula = langevin_flow(gaussian_target(MEAN, COV), start, 20, 0.8, metropolis=False, generator=generator)
    assert _moment_errors(ula.particles, MEAN, COV)[1] > 10


def test_ula_stationary_variance_is_exact():
    # z' = (1 - h/2) z + sqrt(h) xi on N(0, 1): the stationary variance is 1 / (1 - h/4).
    h, n = 1.0, 40000
    generator = torch.Generator().manual_seed(2)
    run = langevin_flow(standard_normal, torch.zeros(n, 1, dtype=DTYPE), 40, h, metropolis=False, generator=generator)
    expected = 1.0 / (1.0 - h / 4)  # after 40 steps the start is forgotten up to (1 - h/2)^80 ~ 1e-24
    # sd of a Gaussian sample variance: v sqrt(2 / n); 5 of them (0.047, well below 1/3 - 0).
    assert abs(run.particles.var().item() - expected) < 5 * expected * math.sqrt(2 / n)
    assert abs(run.particles.mean().item()) < 5 * math.sqrt(expected / n)
    assert run.moved == 1.0  # ULA moves every particle whose proposal is finite


def test_ula_recursion_is_the_euler_maruyama_step():
    # With keep_path, each step is z + h/2 score + sqrt(h) xi with xi the generator's next draws.
    h, start = 0.3, torch.randn(5, 3, dtype=DTYPE)
    run = langevin_flow(
        standard_normal, start, 3, h, metropolis=False, generator=torch.Generator().manual_seed(3), keep_path=True
    )
    replay = torch.Generator().manual_seed(3)
    z = start
    for k in range(3):
        noise = torch.randn(z.shape, dtype=DTYPE, generator=replay)
        z = z + 0.5 * h * (-z) + math.sqrt(h) * noise
        assert torch.allclose(run.path[k], z, rtol=0, atol=1e-14)  # float64 round-off
    assert run.path.shape == (3, 5, 3) and run.path_valid.shape == (3, 5)
    assert torch.equal(run.path[-1], run.particles)


@pytest.mark.parametrize("metropolis", [True, False])
def test_invalid_particles_never_move_and_walls_reject(metropolis):
    generator = torch.Generator().manual_seed(4)
    start = torch.randn(2000, 2, dtype=DTYPE, generator=generator)
    started_valid = start[:, 0] > 0
    run = langevin_flow(half_space, start, 30, 0.5, metropolis=metropolis, generator=generator, keep_path=True)
    # Chains that start where p is -inf stay exactly where they are, and invalid.
    assert torch.equal(run.particles[~started_valid], start[~started_valid])
    assert not run.valid[~started_valid].any()
    assert not run.path_valid[:, ~started_valid].any()
    # Chains that start inside never cross the wall (a proposal into -inf is rejected) ...
    assert (run.path[:, started_valid, 0] > 0).all()
    assert run.valid[started_valid].all() and run.path_valid[:, started_valid].all()
    assert torch.isfinite(run.log_p[started_valid]).all() and torch.isfinite(run.score[started_valid]).all()
    # ... and some proposals did hit the wall: fewer particle-steps moved than started inside.
    assert 0 < run.moved < started_valid.double().mean()
    assert 0 <= run.acceptance <= 1


def test_acceptance_is_a_probability_and_matches_the_moves():
    n, k = 4000, 10
    run = langevin_flow(
        standard_normal, torch.randn(n, 3, dtype=DTYPE), k, 1.5, generator=torch.Generator().manual_seed(5)
    )
    assert 0 <= run.acceptance <= 1 and 0 <= run.moved <= 1
    # moved - acceptance averages n k martingale differences of variance <= 1/4: 5 sd.
    assert abs(run.moved - run.acceptance) < 5 * math.sqrt(0.25 / (n * k))


def test_mala_log_acceptance_by_hand():
    generator = torch.Generator().manual_seed(6)
    z, y = torch.randn(7, 3, dtype=DTYPE, generator=generator), torch.randn(7, 3, dtype=DTYPE, generator=generator)
    mean, cov = torch.tensor([0.5, 0.0, -1.0], dtype=DTYPE), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=DTYPE))
    target = gaussian_target(mean, cov)
    (lp_z, s_z, _), (lp_y, s_y, _) = target(z), target(y)
    h = 0.7
    log_alpha = mala_log_acceptance(z, lp_z, s_z, y, lp_y, s_y, h)
    for i in range(7):
        forward = torch.distributions.Normal(z[i] + h / 2 * s_z[i], math.sqrt(h)).log_prob(y[i]).sum()
        backward = torch.distributions.Normal(y[i] + h / 2 * s_y[i], math.sqrt(h)).log_prob(z[i]).sum()
        expected = lp_y[i] - lp_z[i] + backward - forward
        assert abs(log_alpha[i] - expected) < 1e-12  # float64 round-off
    # A proposal with a non-finite log density or score is never accepted.
    lp_y[0], s_y[1, 2] = -math.inf, math.nan
    log_alpha = mala_log_acceptance(z, lp_z, s_z, y, lp_y, s_y, h)
    assert log_alpha[0] == -math.inf and log_alpha[1] == -math.inf and torch.isfinite(log_alpha[2:]).all()


def test_mala_log_acceptance_is_zero_for_a_symmetric_exact_move():
    # From z to -z on N(0, 1) the densities agree and q(-z | z) = q(z | -z): alpha = 1 exactly.
    z = torch.tensor([[1.3]], dtype=DTYPE)
    log_alpha = mala_log_acceptance(z, -z.pow(2).sum(-1) / 2, -z, -z, -z.pow(2).sum(-1) / 2, z, 0.4)
    assert log_alpha.abs().item() < 1e-15


def test_proposal_by_hand_and_taming():
    z = torch.tensor([[10.0, 0.0], [0.1, 0.2]], dtype=DTYPE)
    score = -z.pow(3)  # log p = -|z|^4 / 4: superlinear score
    noise = torch.tensor([[0.3, -0.2], [0.0, 1.0]], dtype=DTYPE)
    h = 0.1
    plain = langevin_proposal(z, score, h, noise)
    assert torch.allclose(plain, z + h / 2 * score + math.sqrt(h) * noise, rtol=0, atol=1e-14)
    tamed = langevin_proposal(z, score, h, noise, tamed=True)
    drift = h / 2 * score
    expected = z + drift / (1 + drift.norm(dim=-1, keepdim=True)) + math.sqrt(h) * noise
    assert torch.allclose(tamed, expected, rtol=0, atol=1e-14)
    tamed_drift = tamed - z - math.sqrt(h) * noise
    assert (tamed_drift.norm(dim=-1) < 1).all()  # |d / (1 + |d|)| < 1, here d = -50 in the first row
    # Where the step is small the taming changes it by a factor 1 / (1 + |d|) only (|d| ~ 2e-4).
    assert torch.allclose(tamed_drift[1], drift[1], rtol=1e-3, atol=0)


def test_tamed_flow_survives_a_steep_target():
    def quartic(z):
        return -z.pow(4).sum(-1) / 4, -z.pow(3), torch.ones(len(z), dtype=torch.bool)

    start = torch.full((200, 1), 10.0, dtype=DTYPE)
    generator = torch.Generator().manual_seed(7)
    run = langevin_flow(quartic, start, 300, 0.1, metropolis=False, tamed=True, generator=generator)
    # Each tamed drift is at most 1, so the particles walk in and settle near the mode
    # (the quartic's sd is ~0.7; |z| < 4 everywhere is a wide margin).
    assert run.valid.all() and (run.particles.abs() < 4).all()
    # Untamed, the first step overshoots to about -40 and the flow diverges (|z| ~ 1e9 after 3 steps).
    plain = langevin_flow(quartic, start, 3, 0.1, metropolis=False, generator=torch.Generator().manual_seed(7))
    assert (plain.particles.abs() > 10).all()


def test_initial_saves_one_evaluation_and_generator_reproduces():
    calls = []

    def counted(z):
        calls.append(len(z))
        return standard_normal(z)

    start = torch.randn(50, 2, dtype=DTYPE)
    a = langevin_flow(counted, start, 4, 0.5, generator=torch.Generator().manual_seed(8))
    assert len(calls) == 5
    calls.clear()
    b = langevin_flow(counted, start, 4, 0.5, initial=standard_normal(start), generator=torch.Generator().manual_seed(8))
    assert len(calls) == 4
    assert torch.equal(a.particles, b.particles) and torch.equal(a.log_p, b.log_p)
    assert a.path is None and a.path_valid is None
    lp, s, _ = standard_normal(a.particles)
    assert torch.equal(a.log_p, lp) and torch.equal(a.score, s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 0, "step_size": 0.1},
        {"num_steps": 1, "step_size": 0.0},
        {"num_steps": 1, "step_size": -1.0},
        {"num_steps": 1, "step_size": 0.1, "tamed": True},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        langevin_flow(standard_normal, torch.zeros(3, 1), **kwargs)
