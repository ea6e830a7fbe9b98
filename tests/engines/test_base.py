"""The engines' shared machinery: per-run state, so one engine object serves several
models as fresh engines would, and capabilities found by protocol."""

import gc
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from models import broadcast_logistic_model, logistic_data
from pyro.infer import SVI
from pyro.infer.autoguide import AutoMultivariateNormal

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler, CTFDistillation
from pyro_stein.engines import Engine, ParticleRun
from pyro_stein.guides import ParticleSampler, PreconditionedSampler


def two_d():
    pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def eight_d():
    pyro.sample("w", dist.Normal(torch.zeros(8), torch.linspace(0.5, 2.0, 8)).to_event(1))


@pytest.mark.parametrize("make_engine", [lambda: CTFDistillation(num_steps=2, num_particles=64),
                                         lambda: AmortizedSVGD(num_particles=64)])
def test_a_reused_engine_fits_a_second_model_as_a_fresh_one_would(make_engine):
    shared = make_engine()
    pyro_stein.fit(two_d, engine=shared, num_steps=40, seed=0, progress=False)
    second = pyro_stein.fit(eight_d, engine=shared, num_steps=40, seed=1, progress=False)
    fresh = pyro_stein.fit(eight_d, engine=make_engine(), num_steps=40, seed=1, progress=False)
    assert second.history == fresh.history  # bit for bit: nothing carried over
    pyro.set_rng_seed(2)
    a = second.sample(100)["w"]
    pyro.set_rng_seed(2)
    assert torch.equal(a, fresh.sample(100)["w"])


def test_ctf_resolves_the_step_size_per_model():
    """The measured defect: an engine reused from a 2-D model started an 8-D one at the
    2-D model's adapted step size; each run starts at its own D^(-1/3)."""
    engine = CTFDistillation(num_steps=2, num_particles=64)
    first = pyro_stein.fit(two_d, engine=engine, num_steps=40, seed=0, progress=False)
    second = pyro_stein.fit(eight_d, engine=engine, num_steps=40, seed=0, progress=False)
    assert first.history["step_size"][0] == pytest.approx(2 ** (-1 / 3))
    assert first.history["step_size"][-1] != first.history["step_size"][0]  # it adapted
    assert second.history["step_size"][0] == pytest.approx(8 ** (-1 / 3))
    assert engine.step_size is None  # the constructor's argument is untouched
    assert engine.run_of(first.guide) is not engine.run_of(second.guide)


def test_two_guides_train_side_by_side_under_svi():
    engine = AmortizedSVGD(num_particles=32)
    guides = [AutoNeuralSampler(two_d, init_scale=0.5), AutoNeuralSampler(eight_d, init_scale=0.5)]
    with pyro.get_param_store().scope():
        svi_a = SVI(two_d, guides[0], pyro.optim.Adam({"lr": 1e-2}), loss=engine)
        for _ in range(3):
            svi_a.step()
    with pyro.get_param_store().scope():
        svi_b = SVI(eight_d, guides[1], pyro.optim.Adam({"lr": 1e-2}), loss=engine)
        for _ in range(5):
            svi_b.step()
    assert [engine.run_of(g).step_count for g in guides] == [3, 5]
    assert engine.run_of(guides[1]).density.layout.latent_dim == 8
    assert engine.diagnostics is engine.run_of(guides[1]).diagnostics  # the last step's


def test_runs_end_with_their_guide():
    engine = AmortizedSVGD(num_particles=16)
    guide = AutoNeuralSampler(two_d, init_scale=0.5)
    engine.start_run(two_d, guide)
    assert len(engine._runs) == 1
    del guide
    gc.collect()
    assert len(engine._runs) == 0
    with pytest.raises(KeyError, match="no run on this guide"):
        engine.run_of(AutoNeuralSampler(two_d))


def test_a_guide_moved_to_another_model_gets_a_new_run():
    engine = AmortizedSVGD(num_particles=16)
    guide = AutoNeuralSampler(two_d, init_scale=0.5)
    first = engine.start_run(two_d, guide)
    assert engine.start_run(two_d, guide) is first

    def same_sites():
        pyro.sample("x", dist.Normal(torch.ones(2), 1.0).to_event(1))

    assert engine.start_run(same_sites, guide) is not first


def test_capabilities_are_protocols():
    guide = AutoNeuralSampler(two_d, init_scale=0.5)
    guide.setup()
    assert isinstance(guide, PreconditionedSampler) and isinstance(guide, ParticleSampler)
    assert isinstance(AmortizedSVGD(), Engine) and isinstance(CTFDistillation(), Engine)
    other = AutoMultivariateNormal(two_d)
    other()
    assert not isinstance(other, ParticleSampler)
    run = AmortizedSVGD(num_particles=8).start_run(two_d, other)  # trained without preconditioning
    assert isinstance(run, ParticleRun) and run.density.layout.latent_dim == 2


def test_fit_refuses_an_engine_class_and_what_is_no_loss():
    with pytest.raises(TypeError, match=r"got the class AmortizedSVGD: pass AmortizedSVGD\(\) instead"):
        pyro_stein.fit(two_d, engine=AmortizedSVGD, num_steps=1, progress=False)
    with pytest.raises(TypeError, match="engine must be a name.*got object"):
        pyro_stein.fit(two_d, engine=object(), num_steps=1, progress=False)


def test_fit_still_runs_a_plain_pyro_loss():
    guide = AutoMultivariateNormal(two_d)
    result = pyro_stein.fit(two_d, engine=pyro.infer.Trace_ELBO(), guide=guide, num_steps=300, seed=0, progress=False)
    losses = torch.tensor(result.history["loss"])
    assert len(losses) == 300
    # From the initial scale 0.1 to N(0, I) the negative ELBO falls by D (log 10 - 0.495) = 3.6 in all;
    # the default schedule's 300 steps get about half way (1.9 measured), and a mean of 30
    # one-sample estimates is within about 0.2 of its expectation.
    assert losses[:30].mean() - losses[-30:].mean() > 1.0


def test_too_few_particles_are_accepted_with_the_measured_figures():
    with pytest.warns(RuntimeWarning, match=r"AmortizedSVGD\(num_particles=2\): fewer particles than 16.*at 2 particles the posterior sds came out 0.9 to 500 times"):
        AmortizedSVGD(num_particles=2)
    with pytest.warns(RuntimeWarning, match=r"CTFDistillation\(num_particles=20\): fewer particles than 32.*at 16 particles .*0.83 to 0.88 times"):
        CTFDistillation(num_particles=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AmortizedSVGD(num_particles=16)
        CTFDistillation(num_particles=32)


def _rows_model(x, y, subsample_size=None):
    beta = pyro.sample("beta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("rows", len(y), subsample_size=subsample_size) as rows:
        pyro.sample("y", dist.Normal(x[rows] @ beta, 1.0), obs=y[rows])


def test_a_step_over_many_rows_of_an_unsubsampled_plate_warns_how_to_subsample():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(30000, 2, generator=generator)
    y = x.sum(-1) + torch.randn(30000, generator=generator)
    with pytest.warns(RuntimeWarning, match=r"observed site 'y' on 30000 terms for each of 512 particles .*pyro.plate\('rows'"):
        AmortizedSVGD().start_run(_rows_model, AutoNeuralSampler(_rows_model), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        AmortizedSVGD().start_run(_rows_model, AutoNeuralSampler(_rows_model), x, y, subsample_size=500)
        AmortizedSVGD(num_particles=64).start_run(_rows_model, AutoNeuralSampler(_rows_model), x, y)


@pytest.mark.parametrize("engine_type", ["AmortizedSVGD", "CTFDistillation"])
def test_engine_steps_on_the_compiled_density_when_asked(engine_type):
    x, y = logistic_data()

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pyro_stein.AutoNeuralSampler(broadcast_logistic_model)
    engine = {"AmortizedSVGD": AmortizedSVGD, "CTFDistillation": CTFDistillation}[engine_type](num_particles=32, compile_density=True)
    svi = pyro.infer.SVI(broadcast_logistic_model, guide, pyro.optim.Adam({"lr": 1e-2}), loss=engine)
    losses = [svi.step(x, y) for _ in range(3)]
    compiled = engine.run_of(guide).density.compiled
    assert compiled is not None and compiled.compiled[torch.Size([32, 3])] is not None
    assert torch.isfinite(torch.tensor(losses)).all()
