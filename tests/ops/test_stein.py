import pytest
import torch

from pyro_stein.ops.kernels import IMQKernel, RBFKernel
from pyro_stein.ops.stein import kernel_gram, squared_ksd, stein_direction


def _kernel_fn(kernel, h):
    if isinstance(kernel, RBFKernel):
        return lambda a, b: torch.exp(-((a - b) ** 2).sum() / h)
    return lambda a, b: (kernel.c**2 + ((a - b) ** 2).sum() / h) ** kernel.beta


@pytest.mark.parametrize("kernel", [RBFKernel(), IMQKernel()], ids=repr)
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_direction_and_ksd_match_brute_force(kernel, leave_one_out):
    n, d = 7, 3
    x = torch.randn(n, d, dtype=torch.float64)
    s = torch.randn(n, d, dtype=torch.float64)
    gram = kernel_gram(x, kernel)
    k = _kernel_fn(kernel, gram.profile.bandwidth)
    phi = torch.zeros(n, d, dtype=torch.float64)
    u_sum = 0.0
    for i in range(n):
        for j in range(n):
            if i == j and leave_one_out:
                continue
            xj = x[j].clone().requires_grad_(True)
            kv = k(xj, x[i])
            (gk,) = torch.autograd.grad(kv, xj)
            phi[i] += kv.detach() * s[j] + gk
            if i != j:
                a = x[i].clone().requires_grad_(True)
                b = x[j].clone().requires_grad_(True)
                kv = k(a, b)
                ga, gb = torch.autograd.grad(kv, (a, b), create_graph=True)
                trace = sum(torch.autograd.grad(gb[c], a, retain_graph=True)[0][c] for c in range(d))
                u_sum += (kv * s[i] @ s[j] + s[i] @ gb + s[j] @ ga + trace).item()
    phi /= n - 1 if leave_one_out else n
    assert torch.allclose(stein_direction(s, gram, leave_one_out=leave_one_out), phi, atol=1e-12)
    assert squared_ksd(s, gram).item() == pytest.approx(u_sum / (n * (n - 1)), abs=1e-12)


@pytest.mark.parametrize("kernel", [RBFKernel(), IMQKernel()], ids=repr)
def test_ksd_is_near_zero_for_exact_draws_and_grows_when_shifted_or_shrunk(kernel):
    torch.manual_seed(0)
    dim, n, reps = 4, 200, 40

    def ksd(transform):
        values = []
        for _ in range(reps):
            x = transform(torch.randn(n, dim, dtype=torch.float64))
            values.append(squared_ksd(-x, kernel_gram(x, kernel)))  # target N(0, I)
        values = torch.stack(values)
        return values.mean().item(), (values.std() / reps**0.5).item()

    exact, exact_se = ksd(lambda x: x)
    shifted, _ = ksd(lambda x: x + 0.5)
    shrunk, _ = ksd(lambda x: 0.7 * x)
    assert abs(exact) < 4 * exact_se  # unbiased: zero up to noise
    assert shifted > exact + 10 * exact_se
    assert shrunk > exact + 10 * exact_se


def test_leave_one_out_direction_has_no_inward_bias_at_the_target():
    # For exact draws of N(0, I), E[x_i . phi_i] is zero with the leave-one-out direction
    # and negative (a pull that would shrink the sampler) with the self-interaction kept.
    torch.manual_seed(1)
    dim, n, reps = 5, 128, 200
    loo, vstat = [], []
    for _ in range(reps):
        x = torch.randn(n, dim, dtype=torch.float64)
        gram = kernel_gram(x, RBFKernel())
        loo.append((x * stein_direction(-x, gram, leave_one_out=True)).sum(-1).mean())
        vstat.append((x * stein_direction(-x, gram, leave_one_out=False)).sum(-1).mean())
    loo, vstat = torch.stack(loo), torch.stack(vstat)
    se = loo.std() / reps**0.5
    assert abs(loo.mean()) < 4 * se
    assert vstat.mean() < -10 * se


def test_invalid_particles_exert_no_force_and_are_pulled_back():
    torch.manual_seed(2)
    x = torch.randn(20, 2, dtype=torch.float64)
    x[3] = torch.tensor([6.0, 0.0], dtype=torch.float64)  # out beyond a wall
    s = -x.clone()
    s[3] = float("nan")
    valid = torch.ones(20, dtype=torch.bool)
    valid[3] = False
    gram = kernel_gram(x, RBFKernel(), valid)
    phi = stein_direction(s, gram)
    assert torch.isfinite(phi).all()
    # The valid particles feel exactly the field of the other valid ones ...
    keep = valid.nonzero().squeeze(-1)
    gram_valid = kernel_gram(x[keep], RBFKernel())
    assert torch.allclose(phi[keep], stein_direction(s[keep], gram_valid), atol=1e-12)
    # ... and the invalid one is pulled back towards them.
    assert phi[3, 0] < -1.0
    assert torch.isfinite(squared_ksd(s, gram))


def test_particles_must_be_finite():
    x = torch.zeros(5, 2)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        kernel_gram(x, RBFKernel())
