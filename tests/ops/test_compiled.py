import pytest
import torch

from pyro_stein.ops.compiled import CompiledFunction, graph_elements

_X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))


def _broadcast_regression(z):
    # The idiom the compiler helps: an (N, rows, features) product summed away.
    x = _X
    return -0.5 * ((x * z.unsqueeze(-2)).sum(-1) ** 2).sum(-1)


def _value_and_score(function, z):
    z = z.clone().requires_grad_(True)
    value = function(z)
    (score,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), score


def test_graph_elements_counts_every_operation_output():
    # mul (N * rows * features), sum (N * rows), pow, sum (N), mul; the unsqueeze is a view
    assert graph_elements(_broadcast_regression, torch.zeros(8, 4)) == 1600 + 400 + 400 + 8 + 8


def test_compiled_function_agrees_with_the_eager_one_and_compiles_only_the_named_shapes():
    compiled = CompiledFunction(_broadcast_regression, agree=torch.allclose, shapes=[(8, 4)])
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    value, score = _value_and_score(compiled, z)
    expected_value, expected_score = _value_and_score(_broadcast_regression, z)
    assert compiled.compiled[torch.Size([8, 4])] is not None
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(score, expected_score, rtol=1e-5, atol=1e-4)
    # Another shape runs eagerly and is not compiled.
    other = torch.randn(3, 4)
    torch.testing.assert_close(compiled(other), _broadcast_regression(other))
    assert set(compiled.compiled) == {torch.Size([8, 4])}


def test_a_value_read_from_the_input_is_refused_and_the_function_stays_eager():
    def reads_a_value(z):
        return z.sum(-1) * float(z[0, 0])  # a Python float: it would be a constant once captured

    compiled = CompiledFunction(reads_a_value, agree=torch.allclose, shapes=[(4, 2)])
    z = torch.randn(4, 2)
    with pytest.warns(RuntimeWarning, match="Compiling the function failed .*data-dependent"):
        torch.testing.assert_close(compiled(z), reads_a_value(z))
    assert compiled.compiled[torch.Size([4, 2])] is None


def test_a_failing_compiler_warns_and_the_function_stays_eager(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", no_compiler)
    compiled = CompiledFunction(_broadcast_regression, agree=torch.allclose, what="the test density", shapes=[(8, 4)])
    z = torch.randn(8, 4)
    with pytest.warns(RuntimeWarning, match="Compiling the test density failed .*no C\\+\\+ compiler found.*eagerly"):
        value = compiled(z)
    torch.testing.assert_close(value, _broadcast_regression(z))
    assert compiled.compiled[torch.Size([8, 4])] is None


def test_a_random_draw_inside_the_function_is_caught_and_the_function_stays_eager():
    def draws(z):
        return z.sum(-1) + torch.randn(len(z))

    compiled = CompiledFunction(draws, agree=torch.allclose, shapes=[(4, 2)])
    with pytest.warns(RuntimeWarning, match="differs from its eager evaluation"):
        compiled(torch.zeros(4, 2))
    assert compiled.compiled[torch.Size([4, 2])] is None
