import pyro
import pytest
import torch

# One intra-op thread per test process: pytest-xdist runs one worker per core, and
# OpenMP threads competing for the same cores slow small tensor ops a hundredfold.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts with an empty param store, validation on, a fixed seed and
    float32 as the default dtype."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
    pyro.clear_param_store()
