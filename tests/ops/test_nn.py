"""Tests of `pyro_stein.ops.nn.mlp`, the package's multilayer-perceptron builder."""

import pytest
import torch
from torch import nn

from pyro_stein.ops.nn import mlp


def _kinds(net):
    return [type(layer) for layer in net]


def test_layer_structure():
    net = mlp([3, 8, 5, 2], nn.Tanh)
    assert _kinds(net) == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(3, 8), (8, 5), (5, 2)]
    assert net[1] is not net[3]  # one activation module per hidden layer
    assert _kinds(mlp([4, 1])) == [nn.Linear]  # no hidden layer, no activation
    assert net(torch.randn(7, 3)).shape == (7, 2)


def test_batch_norm_sits_between_each_hidden_layer_and_its_activation():
    net = mlp([3, 8, 5, 2], batch_norm=True)
    assert _kinds(net) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [m.num_features for m in net if isinstance(m, nn.BatchNorm1d)] == [8, 5]


def test_output_activation_and_activation_factories():
    net = mlp([2, 4, 3], lambda: nn.LeakyReLU(0.2), output_activation=nn.Sigmoid)
    assert _kinds(net) == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.Sigmoid]
    assert net[1].negative_slope == 0.2
    out = net(torch.randn(10, 2))
    assert ((out > 0) & (out < 1)).all()


def test_zero_output_is_the_zero_map():
    torch.manual_seed(0)
    net = mlp([3, 16, 16, 2], nn.SiLU, zero_output=True)
    x = torch.randn(20, 3)
    assert torch.equal(net(x), torch.zeros(20, 2))
    assert torch.equal(net[-1].weight, torch.zeros(2, 16)) and torch.equal(net[-1].bias, torch.zeros(2))
    assert net[0].weight.abs().sum() > 0  # only the last layer starts at zero
    # The last Linear, not the output activation, is zeroed: sigmoid(0) = 1/2.
    squashed = mlp([3, 4, 2], zero_output=True, output_activation=nn.Sigmoid)
    assert torch.equal(squashed(x), torch.full((20, 2), 0.5))


def test_seeded_build_equals_layers_written_by_hand():
    torch.manual_seed(3)
    built = mlp([3, 8, 8, 2], nn.Tanh, batch_norm=True)
    torch.manual_seed(3)
    by_hand = nn.Sequential(
        nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2)
    )
    built_state, hand_state = built.state_dict(), by_hand.state_dict()
    assert built_state.keys() == hand_state.keys()
    for key in built_state:
        assert torch.equal(built_state[key], hand_state[key]), key
    x = torch.randn(6, 3)
    assert torch.equal(built(x), by_hand(x))


def test_widths_are_converted_to_int():
    net = mlp((3.0, torch.tensor(4), 2))
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(3, 4), (4, 2)]


@pytest.mark.parametrize("widths", [[], [3], [3, 0, 2], [3, -1], [0, 2]])
def test_bad_widths_raise(widths):
    with pytest.raises(ValueError, match="widths"):
        mlp(widths)
