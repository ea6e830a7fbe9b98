"""For the docstring examples (``--doctest-modules`` over ``pyro_stein``): each starts as a
Pyro user's fresh session would, with an empty param store and a fixed seed."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_pyro_session(doctest_namespace):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)
    yield
    pyro.clear_param_store()
