"""The grouped Stein direction equals the one-group functions applied group by group."""

import pytest
import torch

from pyro_stein.ops.grouped_stein import grouped_kernel_gram, grouped_squared_ksd, grouped_stein_direction
from pyro_stein.ops.kernels import IMQKernel, RBFKernel
from pyro_stein.ops.stein import kernel_gram, squared_ksd, stein_direction


@pytest.mark.parametrize("kernel", [RBFKernel(bandwidth_factor=3.0), IMQKernel(), RBFKernel(bandwidth=0.7)])
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_each_group_is_a_separate_stein_problem(kernel, leave_one_out):
    generator = torch.Generator().manual_seed(0)
    # Groups at different locations and scales: each must get its own bandwidth.
    particles = torch.randn(4, 33, 3, generator=generator, dtype=torch.float64)
    particles = particles * torch.tensor([0.1, 1.0, 5.0, 30.0], dtype=torch.float64).reshape(4, 1, 1) + 7.0
    scores = torch.randn(4, 33, 3, generator=generator, dtype=torch.float64)
    gram = grouped_kernel_gram(particles, kernel)
    direction = grouped_stein_direction(scores, gram, leave_one_out=leave_one_out)
    discrepancy = grouped_squared_ksd(scores, gram)
    for group in range(4):
        single = kernel_gram(particles[group], kernel)
        torch.testing.assert_close(gram.profile.bandwidth[group].reshape(()), single.profile.bandwidth.reshape(()))
        expected = stein_direction(scores[group], single, leave_one_out=leave_one_out)
        torch.testing.assert_close(direction[group], expected)
        torch.testing.assert_close(discrepancy[group], squared_ksd(scores[group], single))


def test_the_direction_moves_each_group_towards_its_own_target():
    # Group g's target is N(t_g, 1), its particles start at N(0, 1): the group whose target
    # is where it stands does not move on average (Monte Carlo error about 0.03 here), the
    # others move towards their targets, in proportion (the kernel's mean weight, about 0.2).
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 200, 1, generator=generator)
    targets = torch.tensor([0.0, 2.0, -3.0]).reshape(3, 1, 1)
    phi = grouped_stein_direction(targets - x, grouped_kernel_gram(x, RBFKernel()))
    mean_move = phi.mean((1, 2))
    assert abs(float(mean_move[0])) < 0.05
    assert float(mean_move[1]) > 0.2 and float(mean_move[2]) < -0.3
    assert 1.2 < float(mean_move[2] / mean_move[1]) * -1 < 1.8  # 3 : 2


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(G, K, d\)"):
        grouped_kernel_gram(torch.randn(10, 3), RBFKernel())
    with pytest.raises(ValueError, match="K >= 2"):
        grouped_kernel_gram(torch.randn(10, 1, 3), RBFKernel())
    with pytest.raises(ValueError, match="finite"):
        grouped_kernel_gram(torch.full((2, 4, 1), float("nan")), RBFKernel())
