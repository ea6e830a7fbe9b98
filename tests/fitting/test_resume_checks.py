"""A checkpoint resumes only the run that wrote it: each difference in what the run
depends on is refused, and named (issue 17, item 2)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from interrupts import raise_inside_step
from models import NORMAL_DATA, normal_model

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler
from pyro_stein.fitting.checkpoint import FIT_CHECKPOINT, read_state, write_state

model, Y = normal_model, NORMAL_DATA
STEPS = 4


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    pyro_stein.fit(model, Y, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    return path


def refused(path, pattern, the_model=model, *args, **options):
    settings = {"num_steps": STEPS, "seed": 0, "progress": False, "checkpoint": path, **options}
    with pytest.raises(ValueError, match="belongs to another run, so it cannot be resumed: .*" + pattern):
        pyro_stein.fit(the_model, *(args or (Y,)), **settings)


def test_the_same_run_resumes(checkpoint):
    result = pyro_stein.fit(model, Y, num_steps=STEPS, seed=0, progress=False, checkpoint=checkpoint)
    assert result.num_steps == STEPS


def test_other_data_of_the_same_shape_is_refused(checkpoint):
    refused(
        checkpoint,
        r"argument 'y': tensor float32 \(6,\) sha256 \w+ in the checkpoint's run, tensor float32 \(6,\) sha256 \w+ in this one",
        model,
        Y + 1.0,
    )


def test_another_site_of_the_same_size_is_refused(checkpoint):
    def renamed(y):
        mu = pyro.sample("location", dist.Normal(0.0, 5.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    # Same latent size (2), same shapes: only the fingerprint tells them apart.
    refused(checkpoint, r"model: .*model in the checkpoint's run, .*renamed in this one; site 'mu': latent Normal.*absent from this one.*site 'location'", renamed)


def test_another_support_or_family_is_refused(checkpoint):
    def model(y):  # the same name: only the site tells them apart
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    refused(checkpoint, r"site 'sigma': latent HalfNormal, .* in the checkpoint's run, latent LogNormal, .* in this one", model)


def test_another_seed_engine_guide_or_length_is_refused(checkpoint):
    refused(checkpoint, "seed: 0 in the checkpoint's run, 1 in this one", seed=1)
    refused(checkpoint, "engine option num_particles: 512 in the checkpoint's run, 64 in this one", engine=AmortizedSVGD(num_particles=64))
    refused(checkpoint, "engine: AmortizedSVGD in the checkpoint's run, CTFDistillation in this one", engine="ctf")
    refused(checkpoint, r"guide option hidden_dims: None in the checkpoint's run, \(8,\) in this one", guide=AutoNeuralSampler(model, hidden_dims=(8,)))
    refused(checkpoint, "num_steps: 4 in the checkpoint's run, 6 in this one", num_steps=6)
    refused(checkpoint, r"optimizer option arguments: \{'betas': \(0.9, 0.9\), 'lr': 0.01\} in the checkpoint's run, "
            r"\{'lr': 0.1\} in this one; stop_when_converged: True in the checkpoint's run, False in this one",
            optim=pyro.optim.Adam({"lr": 0.1}))
    refused(checkpoint, "optimizer: PyroOptim in the checkpoint's run, PyroLRScheduler in this one", stop_when_converged=False)


def test_a_checkpoint_without_a_fingerprint_is_refused(checkpoint):
    state = read_state(checkpoint, FIT_CHECKPOINT)
    del state["fingerprint"]
    write_state(checkpoint, state, FIT_CHECKPOINT)
    refused(checkpoint, r"argument 'y': absent from the checkpoint's run")


def test_model_parameters_are_checkpointed_and_resumed_exactly(tmp_path, monkeypatch):
    def scaled(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    straight = pyro_stein.fit(scaled, Y, num_steps=40, seed=0, progress=False)
    path = tmp_path / "run.ckpt"
    pyro_stein.fit(scaled, Y, num_steps=40, seed=0, progress=False, checkpoint=path, checkpoint_every=20)
    state = read_state(path, FIT_CHECKPOINT)
    assert set(state["model_params"]) == {"scale"}
    assert "param 'scale'" in state["fingerprint"]

    # A run stopped inside step 25 keeps its step-20 checkpoint; resuming repeats the rest.
    cut = tmp_path / "interrupted.ckpt"
    with monkeypatch.context() as patch:
        raise_inside_step(patch, 25)
        with pytest.warns(RuntimeWarning, match="holds step 20"):
            pyro_stein.fit(scaled, Y, num_steps=40, seed=0, progress=False, checkpoint=cut, checkpoint_every=20)
    resumed = pyro_stein.fit(scaled, Y, num_steps=40, seed=0, progress=False, checkpoint=cut, checkpoint_every=20)
    assert resumed.history == straight.history
    assert torch.equal(resumed.params["scale"], straight.params["scale"])


def test_the_guide_object_the_interrupted_call_trained_resumes(tmp_path):
    """The notebook pattern: one guide object, fit, Ctrl-C, the same call again."""
    guide = AutoNeuralSampler(model)
    path = tmp_path / "run.ckpt"
    pyro_stein.fit(model, Y, guide=guide, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    again = pyro_stein.fit(model, Y, guide=guide, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    assert again.num_steps == STEPS


def test_an_optimizer_shared_with_an_earlier_fit_checkpoints(tmp_path):
    optim = pyro.optim.Adam({"lr": 0.01})
    pyro_stein.fit(model, Y, optim=optim, num_steps=STEPS, seed=0, progress=False)
    path = tmp_path / "run.ckpt"
    pyro_stein.fit(model, Y, optim=optim, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    assert None not in read_state(path, FIT_CHECKPOINT)["optim"]


def test_data_the_model_holds_itself_and_its_priors_are_compared(tmp_path):
    def closure_over(data, prior_scale):
        def held(y):  # the argument is ignored: the data is in the closure
            mu = pyro.sample("mu", dist.Normal(0.0, prior_scale))
            with pyro.plate("data", len(data)):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=data)

        return held

    path = tmp_path / "run.ckpt"
    pyro_stein.fit(closure_over(Y, 5.0), Y, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    refused(path, r"site 'y': observed Normal, .*parameters and values sha256 \w+ in the checkpoint's run", closure_over(Y + 1, 5.0))
    refused(path, r"site 'mu': latent Normal, .*parameters sha256 \w+ in the checkpoint's run", closure_over(Y, 0.01))


def test_fingerprints_hold_no_memory_addresses(tmp_path):
    from pyro.infer.autoguide.initialization import init_to_value

    path = tmp_path / "run.ckpt"
    guide = AutoNeuralSampler(model, init_loc_fn=init_to_value(values={"mu": torch.tensor(1.0)}))
    pyro_stein.fit(model, Y, guide=guide, num_steps=STEPS, seed=0, progress=False, checkpoint=path)
    fingerprint = read_state(path, FIT_CHECKPOINT)["fingerprint"]
    assert not any(" at 0x" in value for value in fingerprint.values()), fingerprint
    assert "init_to_value" in fingerprint["guide option init_loc_fn"]


def test_a_pyro_autoguide_trained_by_a_pyro_loss_resumes_exactly(tmp_path, monkeypatch):
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    def run(path=None):
        return pyro_stein.fit(model, Y, guide=AutoNormal(model), engine=Trace_ELBO(), num_steps=30, seed=0,
                              progress=False, checkpoint=path, checkpoint_every=10)

    straight = run()
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        raise_inside_step(patch, 25)
        with pytest.warns(RuntimeWarning, match="holds step 20"):
            run(path)
    resumed = run(path)
    assert resumed.history == straight.history
    for name, value in straight.guide.state_dict().items():
        assert torch.equal(value, resumed.guide.state_dict()[name]), name
