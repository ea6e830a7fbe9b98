"""Tests of the pieces of `pyro_stein.ops.stein`: `kernel_gram` (with ``valid`` and ``groups``),
`kernel_drive` and `kernel_repulsion`, against `stein_direction` and brute-force sums."""

import math

import pytest
import torch

from pyro_stein.ops.kernels import IMQKernel, RBFKernel
from pyro_stein.ops.stein import kernel_drive, kernel_gram, kernel_repulsion, stein_direction

DTYPE = torch.float64
KERNELS = [RBFKernel(), IMQKernel(), RBFKernel(bandwidth=0.7)]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _kernel_fn(kernel, h):
    if isinstance(kernel, RBFKernel):
        return lambda a, b: torch.exp(-((a - b) ** 2).sum() / h)
    return lambda a, b: (kernel.c**2 + ((a - b) ** 2).sum() / h) ** kernel.beta


def _brute_force(x, s, kernel, h, valid, leave_one_out):
    """``1/n_i sum_j k(x_j, x_i) s_j`` and ``1/n_i sum_j grad_{x_j} k(x_j, x_i)`` over valid j."""
    k = _kernel_fn(kernel, h)
    drive = torch.zeros(len(x), s.shape[1], dtype=DTYPE)
    repulsion = torch.zeros_like(x)
    for i in range(len(x)):
        sources = [j for j in range(len(x)) if valid[j] and not (leave_one_out and j == i)]
        for j in sources:
            xj = x[j].clone().requires_grad_(True)
            value = k(xj, x[i])
            (grad,) = torch.autograd.grad(value, xj)
            drive[i] += value.detach() * s[j]
            repulsion[i] += grad
        drive[i] /= max(len(sources), 1)
        repulsion[i] /= max(len(sources), 1)
    return drive, repulsion


@pytest.mark.parametrize("kernel", KERNELS, ids=repr)
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_drive_plus_repulsion_is_the_stein_direction(kernel, leave_one_out):
    g = _gen(0)
    x, s = torch.randn(9, 3, dtype=DTYPE, generator=g), torch.randn(9, 3, dtype=DTYPE, generator=g)
    gram = kernel_gram(x, kernel)
    drive = kernel_drive(s, gram, leave_one_out=leave_one_out)
    repulsion = kernel_repulsion(gram, leave_one_out=leave_one_out)
    phi = stein_direction(s, gram, leave_one_out=leave_one_out)
    assert torch.allclose(drive + repulsion, phi, rtol=0, atol=1e-14)  # float64 round-off
    assert torch.allclose(repulsion, stein_direction(torch.zeros_like(s), gram, leave_one_out=leave_one_out),
                          rtol=0, atol=1e-15)
    expected_drive, expected_repulsion = _brute_force(
        x, s, kernel, gram.profile.bandwidth, torch.ones(9, dtype=torch.bool), leave_one_out
    )
    assert torch.allclose(drive, expected_drive, rtol=0, atol=1e-13)
    assert torch.allclose(repulsion, expected_repulsion, rtol=0, atol=1e-13)


def test_drive_takes_scores_of_another_width():
    # Pixel-space scores with a kernel on features: only the kernel values enter.
    g = _gen(1)
    features, scores = torch.randn(8, 2, dtype=DTYPE, generator=g), torch.randn(8, 5, dtype=DTYPE, generator=g)
    gram = kernel_gram(features, RBFKernel())
    drive = kernel_drive(scores, gram)
    expected, _ = _brute_force(features, scores, RBFKernel(), gram.profile.bandwidth, torch.ones(8, dtype=torch.bool), True)
    assert drive.shape == (8, 5)
    assert torch.allclose(drive, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kernel", KERNELS, ids=repr)
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_pieces_with_invalid_particles(kernel, leave_one_out):
    g = _gen(2)
    x, s = torch.randn(10, 2, dtype=DTYPE, generator=g), torch.randn(10, 2, dtype=DTYPE, generator=g)
    valid = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    s[~valid] = math.nan  # scores of invalid particles are ignored
    gram = kernel_gram(x, kernel, valid)
    drive = kernel_drive(s, gram, leave_one_out=leave_one_out)
    repulsion = kernel_repulsion(gram, leave_one_out=leave_one_out)
    assert torch.isfinite(drive).all() and torch.isfinite(repulsion).all()
    # Invalid particles exert no force but are still moved by the valid ones.
    expected_drive, expected_repulsion = _brute_force(x, s, kernel, gram.profile.bandwidth, valid, leave_one_out)
    assert torch.allclose(drive, expected_drive, rtol=0, atol=1e-13)
    assert torch.allclose(repulsion, expected_repulsion, rtol=0, atol=1e-13)
    phi = stein_direction(s, gram, leave_one_out=leave_one_out)
    assert torch.allclose(phi[valid], (drive + repulsion)[valid], rtol=0, atol=1e-14)


def test_invalid_particles_do_not_change_the_valid_ones():
    g = _gen(3)
    x, s = torch.randn(12, 3, dtype=DTYPE, generator=g), torch.randn(12, 3, dtype=DTYPE, generator=g)
    valid = torch.arange(12) % 3 != 0
    phi = stein_direction(s, kernel_gram(x, RBFKernel(), valid))
    # The same direction as on the valid particles alone: the bandwidth, the centring and
    # the sums all see only them.
    alone = stein_direction(s[valid], kernel_gram(x[valid], RBFKernel()))
    assert torch.allclose(phi[valid], alone, rtol=0, atol=1e-13)
    moved = x.clone()
    moved[~valid] += 100.0
    s[~valid] = math.nan
    assert torch.allclose(stein_direction(s, kernel_gram(moved, RBFKernel(), valid))[valid], alone, rtol=0, atol=1e-13)


def test_invalid_particles_are_pulled_to_the_kernel_weighted_mean():
    g = _gen(4)
    x = torch.randn(8, 2, dtype=DTYPE, generator=g)
    x[7] = torch.tensor([1e3, 0.0], dtype=DTYPE)  # so far that every kernel weight underflows
    valid = torch.tensor([True, True, True, True, True, False, False, False])
    s = torch.randn(8, 2, dtype=DTYPE, generator=g)
    kernel = RBFKernel(bandwidth=0.5)
    gram = kernel_gram(x, kernel, valid)
    phi = stein_direction(s, gram, invalid_pull=0.5)
    k = _kernel_fn(kernel, 0.5)
    for i in (5, 6):
        weights = torch.stack([k(x[i], x[j]) for j in range(5)])
        target = (weights.unsqueeze(-1) * x[:5]).sum(0) / weights.sum()
        assert torch.allclose(phi[i], 0.5 * (target - x[i]), rtol=1e-12, atol=1e-13)  # a mean-shift step
    # Beyond the kernel's reach: towards the plain mean of the valid particles.
    assert torch.allclose(phi[7], 0.5 * (x[:5].mean(0) - x[7]), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kernel", [RBFKernel(), IMQKernel()], ids=repr)
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_groups_act_as_separate_runs_up_to_bandwidth_and_normalisation(kernel, leave_one_out):
    g = _gen(5)
    n = 15
    x, s = torch.randn(n, 2, dtype=DTYPE, generator=g), torch.randn(n, 2, dtype=DTYPE, generator=g)
    labels = torch.tensor([0, 1, 2] * 5)[torch.randperm(n, generator=g)]
    labels[labels == 2] = 7  # any label values
    grouped = kernel_gram(x, kernel, groups=labels)
    plain = kernel_gram(x, kernel)
    # The bandwidth is still chosen from all the particles.
    assert torch.equal(grouped.profile.bandwidth, plain.profile.bandwidth)
    phi = stein_direction(s, grouped, leave_one_out=leave_one_out)
    drive = kernel_drive(s, grouped, leave_one_out=leave_one_out)
    repulsion = kernel_repulsion(grouped, leave_one_out=leave_one_out)
    assert torch.allclose(drive + repulsion, phi, rtol=0, atol=1e-14)
    fixed = type(kernel)(bandwidth=float(grouped.profile.bandwidth))
    for label in (0, 1, 7):
        members = labels == label
        separate = stein_direction(s[members], kernel_gram(x[members], fixed), leave_one_out=leave_one_out)
        # The kernel is multiplied by 1[g_i = g_j] and the sum still divided by the count of
        # all sources (N - 1 or N), so a group of n_g is its separate run scaled by
        # (n_g - loo) / (N - loo).
        scale = (int(members.sum()) - leave_one_out) / (n - leave_one_out)
        assert torch.allclose(phi[members], scale * separate, rtol=0, atol=1e-13)


def test_groups_with_invalid_particles():
    g = _gen(6)
    x, s = torch.randn(10, 2, dtype=DTYPE, generator=g), torch.randn(10, 2, dtype=DTYPE, generator=g)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    valid = torch.tensor([True, True, False, True, True, True, False, True, True, True])
    gram = kernel_gram(x, RBFKernel(), valid, groups=labels)
    plain = kernel_gram(x, RBFKernel(), valid)
    assert torch.equal(gram.profile.bandwidth, plain.profile.bandwidth)
    k = _kernel_fn(RBFKernel(), gram.profile.bandwidth)
    drive = kernel_drive(s, gram)
    for i in range(10):
        sources = [j for j in range(10) if valid[j] and j != i]
        expected = sum(k(x[j], x[i]) * s[j] * (labels[i] == labels[j]) for j in sources) / len(sources)
        assert torch.allclose(drive[i], expected, rtol=0, atol=1e-13)
    # An invalid particle is pulled towards the valid members of its own group.
    phi = stein_direction(s, gram)
    for i in (2, 6):
        members = [j for j in range(10) if valid[j] and labels[j] == labels[i]]
        weights = torch.stack([k(x[i], x[j]) for j in members])
        target = (weights.unsqueeze(-1) * x[members]).sum(0) / weights.sum()
        assert torch.allclose(phi[i], target - x[i], rtol=1e-12, atol=1e-13)


def test_kernel_gram_rejects_bad_input():
    x = torch.randn(4, 2, dtype=DTYPE)
    with pytest.raises(ValueError, match="shape"):
        kernel_gram(x[0], RBFKernel())
    bad = x.clone()
    bad[1, 0] = math.inf
    with pytest.raises(ValueError, match="finite"):
        kernel_gram(bad, RBFKernel())
    with pytest.raises(ValueError, match="groups"):
        kernel_gram(x, RBFKernel(), groups=torch.zeros(3))


def test_the_moment_direction_vanishes_at_the_target_and_restores_each_coordinates_scale():
    from pyro_stein.ops.stein import moment_direction

    torch.manual_seed(0)
    valid = torch.ones(4000, dtype=torch.bool)
    exact = torch.randn(4000, 500)
    # At the target the direction is noise: its projection on x (the scale's signal) is
    # within 5 standard errors of 0 in every coordinate; too wide it pulls every coordinate in.
    signal = (moment_direction(exact, -exact, valid) * exact).mean(0)
    assert signal.abs().max() < 5 * (2.0 / 4000) ** 0.5
    wide = 1.2 * exact
    assert ((moment_direction(wide, -wide, valid) * wide).mean(0) < 0).all()


def test_the_moment_direction_ignores_invalid_particles_and_leaves_their_rows_zero():
    from pyro_stein.ops.stein import moment_direction

    x = torch.randn(50, 3)
    scores = -x.clone()
    scores[0] = float("nan")
    valid = torch.ones(50, dtype=torch.bool)
    valid[0] = False
    direction = moment_direction(x, scores, valid)
    assert torch.isfinite(direction).all() and (direction[0] == 0).all()
    assert torch.allclose(direction[1:], moment_direction(x[1:], scores[1:], valid[1:]), atol=1e-6)
    # A particle with no valid partner gets no direction.
    assert (moment_direction(x[:2], scores[:2], valid[:2]) == 0).all()
