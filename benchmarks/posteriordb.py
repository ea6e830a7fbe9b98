"""pyro_stein against its peers on posteriordb posteriors with gold-standard reference draws.

For every posterior (a faithful Pyro port of its Stan model, ``benchmarks/posteriordb_ports.py``)
and every method, 4000 draws are compared with the reference draws (rstan NUTS, 10000
draws): per-parameter standardized mean error ``|mean - ref mean| / ref sd``, sd ratio
``sd / ref sd``, correlation error over the pairs with ``|ref corr| > 0.5``, wall time,
and a verdict, PASS when every mean error is at most 0.1, every sd ratio lies in
[0.9, 1.1] and every such correlation error is at most 0.05.

Methods (all in the same run, same process, same thread count):

* ``pyro_stein``: ``pyro_stein.fit(model, *args)`` with its defaults (its own budget, at most
  2000 steps; ``steps`` is what it took); time is the whole call (initialisation, Laplace
  start, the final KSD and the reliability checks, ``check_seconds``, included).
  ``time_to_pass`` (unless ``--no-time-to-pass``) is the time of the shortest run that PASSes
  among ``fit(..., num_steps=n)`` for n = 250, 500, 1000 and the default (a maximum of n
  steps).
* ``pyro_stein_ctf``: the same with ``engine="ctf"`` (:class:`pyro_stein.CTFDistillation`
  with its defaults).  ``ctf_step_vs_asvgd`` is the time of one of its training steps over
  one Amortized SVGD step, both engines with their defaults (512 particles) on the same
  guide, 20 steps each timed alternately after 20 warm-up steps; ``ctf_time_vs_asvgd`` is
  the whole fit's time over ``pyro_stein``'s on the same posterior (when both run).
* ``pyro_svgd``: Pyro's ``SVGD`` with ``RBFSteinKernel``, 200 particles (its draws: its
  ``N x N x D`` kernel tensor made 1000 particles take 0.46 s a step here), 2000 steps of
  Adam with learning rate 0.1 decayed to 1e-3.
* ``autonormal``, ``automvn``: ``SVI`` with ``Trace_ELBO`` (4 vectorized particles),
  3000 steps of Adam with learning rate 0.02 decayed to 2e-4.
* ``nuts``: Pyro's ``NUTS`` (JIT-compiled, diagonal mass matrix as in Stan), one chain of
  1000 warm-up and 4000 kept iterations, started like Stan (uniform on (-2, 2) in
  unconstrained space).  It checks each port against the reference, and its time is the
  baseline of ``time_vs_nuts``.

The variational peers start where ``fit`` starts, at the Laplace approximation in
unconstrained space (the mode found by the same L-BFGS, here from zero in unconstrained
space, and the Hessian there), and their time includes finding it: ``AutoNormal`` and
``AutoMultivariateNormal`` at the mode (with their default initial scale), Pyro's SVGD with
its particles drawn from the Laplace approximation.  From Stan's initialisation instead,
3000 steps of Adam do not carry them to kidiq's coefficients (the residual scale ends
20 sd off), and their failure would say nothing about the approximation itself.

``ksd`` is :func:`pyro_stein.ksd` of each method's draws (2000 of them): it needs no
reference, and is near zero for exact draws.  ``draws_per_s`` is the rate of drawing from the fitted approximation (for NUTS: kept draws
over the whole run's time).  Every method runs with the same seed.

Usage (``--jobs 2`` runs two posteriors at a time, each process on one thread)::

    python benchmarks/posteriordb.py --posteriordb ../shared/posteriordb/posterior_database \
        --jobs 2 --out benchmarks/results/posteriordb
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.optim
import torch
from posteriordb_ports import Posterior, PosteriorDatabase
from pyro.infer import MCMC, NUTS, SVGD, SVI, RBFSteinKernel, Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoMultivariateNormal, AutoNormal
from pyro.infer.svgd import _SVGDGuide

import pyro_stein
from pyro_stein.diagnostics import compare_draws
from pyro_stein.glue.density import UnconstrainedLogDensity
from pyro_stein.glue.layout import LatentLayout
from pyro_stein.ops.laplace import laplace_approximation, laplace_scale_tril

NUM_DRAWS = 4000
METHODS = ("pyro_stein", "pyro_stein_ctf", "pyro_svgd", "autonormal", "automvn", "nuts")

#: The ``fit`` engine behind each of pyro_stein's rows.
ENGINE_OF = {"pyro_stein": "asvgd", "pyro_stein_ctf": "ctf"}

#: Steps timed per engine for the per-step cost (after as many warm-up steps).
COST_STEPS = 20


def _decaying_adam(lr: float, final_lr: float, num_steps: int) -> pyro.optim.PyroLRScheduler:
    return pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "gamma": (final_lr / lr) ** (1 / num_steps)}
    )


#: Shorter runs of fit (its schedule compressed into fewer steps) tried for ``time_to_pass``.
STEP_LADDER = (250, 500, 1000)



def run_pyro_stein(
    model: Callable, args: tuple, seed: int, num_steps: int | None = None, engine: str = "asvgd"
) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    result = pyro_stein.fit(model, *args, engine=engine, num_steps=num_steps, seed=seed, progress=False)
    start = time.perf_counter()
    draws = result.sample(NUM_DRAWS)
    sample_seconds = time.perf_counter() - start
    extra = {"ksd": result.ksd} if getattr(result, "ksd", None) is not None else {}
    extra["steps"] = result.num_steps
    if result.convergence is not None:
        extra["stopped"] = result.convergence.stopped
        extra["stage_ends"] = [list(end) for end in result.convergence.stage_ends]
        extra["final_se"] = result.convergence.change
    if result.reliability is not None:
        extra.update(reliable=result.reliable, failed_checks=",".join(c.name for c in result.reliability.failed),
                     check_seconds=result.reliability.seconds)
    return draws, result.seconds, NUM_DRAWS / sample_seconds, extra


def laplace_start(model: Callable, args: tuple) -> tuple[LatentLayout, torch.Tensor, torch.Tensor]:
    """The kind of start ``fit`` uses, for the peers: the mode of the unconstrained log
    density (the same L-BFGS and Newton polish, here from zero in unconstrained space
    rather than from ``init_to_median``'s values) and the Cholesky factor of the Laplace
    covariance there.  Returns ``(layout, mode, scale_tril)``."""
    layout = LatentLayout(model, *args)
    density = UnconstrainedLogDensity(model, layout)
    start = layout.init_loc().detach().to(layout.dtype)
    laplace = laplace_approximation(lambda z: density(z, args, {}), start)
    if laplace is None:
        return layout, start, 0.1 * torch.eye(layout.latent_dim, dtype=layout.dtype)
    mode, precision = laplace
    return layout, mode.detach(), laplace_scale_tril(precision, fallback_scale=0.1)[0]


def _per_draw(draws: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Drop the singleton plate dims that batched runs leave: ``{site: (n, *site_shape)}``."""
    return {name: value.detach().reshape(len(value), *shapes[name]) for name, value in draws.items() if name in shapes}


class _SVGDGuideLaplaceInit(_SVGDGuide):
    """Pyro's SVGD guide with its particles drawn from the Laplace approximation, where
    ``fit`` starts, instead of from the prior (which ``ImproperUniform`` cannot sample);
    Pyro's ``SVGD`` has no argument for it.  ``particles``: ``{site: (N, *site_shape)}``."""

    def __init__(self, model: Callable, particles: dict[str, torch.Tensor]) -> None:
        def init_loc_fn(site: dict) -> torch.Tensor:
            # The vectorized model's site shape is (N, 1 ... 1, *site_shape): same numel.
            return particles[site["name"]].reshape(site["fn"].shape())

        AutoContinuous.__init__(self, model, init_loc_fn=init_loc_fn)


def run_pyro_svgd(model: Callable, args: tuple, seed: int) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    num_steps, num_particles = 2000, 200
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    layout, mode, scale_tril = laplace_start(model, args)
    noise = torch.randn(num_particles, layout.latent_dim, dtype=mode.dtype)
    optim = _decaying_adam(0.1, 1e-3, num_steps)
    svgd = SVGD(model, RBFSteinKernel(), optim, num_particles=num_particles, max_plate_nesting=1)
    svgd.guide = _SVGDGuideLaplaceInit(svgd.model, layout.unpack(mode + noise @ scale_tril.T))
    for _ in range(num_steps):
        svgd.step(*args)
        optim.step()
    seconds = time.perf_counter() - start
    draws = _per_draw(svgd.get_named_particles(), LatentLayout(model, *args).site_shapes)
    return draws, seconds, float("nan"), {"num_draws": num_particles}


def _run_svi(guide_class, model: Callable, args: tuple, seed: int) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    num_steps = 3000
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    layout, mode, _ = laplace_start(model, args)
    at_mode = {name: value[0] for name, value in layout.unpack(mode.unsqueeze(0)).items()}
    guide = guide_class(model, init_loc_fn=pyro_stein.init_to_value(values=at_mode))
    optim = _decaying_adam(0.02, 2e-4, num_steps)
    svi = SVI(model, guide, optim, loss=Trace_ELBO(num_particles=4, vectorize_particles=True))
    for _ in range(num_steps):
        svi.step(*args)
        optim.step()
    seconds = time.perf_counter() - start
    shapes = LatentLayout(model, *args).site_shapes
    start = time.perf_counter()
    with torch.no_grad():
        # Predictive on the guide alone: with the model it would sample the prior to guess
        # the plate nesting, which ImproperUniform (flat priors) cannot do.
        samples = pyro.infer.Predictive(guide, num_samples=NUM_DRAWS)(*args)
    sample_seconds = time.perf_counter() - start
    return _per_draw(samples, shapes), seconds, NUM_DRAWS / sample_seconds, {}


def run_nuts(model: Callable, args: tuple, seed: int) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    # max_plate_nesting given: Pyro would otherwise guess it by sampling the prior, which
    # ImproperUniform (flat priors) cannot do.
    kernel = NUTS(
        model, jit_compile=True, ignore_jit_warnings=True, init_strategy=pyro_stein.init_to_uniform, max_plate_nesting=1
    )
    mcmc = MCMC(kernel, num_samples=NUM_DRAWS, warmup_steps=1000, num_chains=1, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(*args)
    seconds = time.perf_counter() - start
    diagnostics = mcmc.diagnostics()
    ess = min(float(np.min(np.asarray(v["n_eff"]))) for k, v in diagnostics.items() if isinstance(v, dict) and "n_eff" in v)
    return mcmc.get_samples(), seconds, NUM_DRAWS / seconds, {"min_ess": ess}


RUNNERS = {
    "pyro_stein": run_pyro_stein,
    "pyro_stein_ctf": lambda m, a, s: run_pyro_stein(m, a, s, engine="ctf"),
    "pyro_svgd": run_pyro_svgd,
    "autonormal": lambda m, a, s: _run_svi(AutoNormal, m, a, s),
    "automvn": lambda m, a, s: _run_svi(AutoMultivariateNormal, m, a, s),
    "nuts": run_nuts,
}


def evaluate(posterior: Posterior, method: str, seed: int, time_to_pass: bool = True) -> dict[str, Any]:
    model, args = posterior.model_and_args(torch.float64)
    pyro.clear_param_store()
    row: dict[str, Any] = {"posterior": posterior.name, "method": method}
    try:
        draws, seconds, draws_per_s, extra = RUNNERS[method](model, args, seed)
        values = posterior.reference_columns(draws)
        if not np.isfinite(values).all():
            raise FloatingPointError("non-finite draws")
    except Exception as error:  # a peer that fails on a posterior is a result, not a crash
        row.update(verdict="ERROR", error=f"{type(error).__name__}: {error}".splitlines()[0][:200])
        traceback.print_exc()
        return row
    comparison = compare_draws(values, posterior.reference_draws(), posterior.reference_names)
    extra["ksd"] = pyro_stein.ksd(model, draws, *args, max_draws=2000)
    if "reliable" not in extra:  # the same verdict on another method's draws
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            report = pyro_stein.check_reliability(model, draws, *args, seed=seed)
        extra.update(reliable=report.reliable, failed_checks=",".join(c.name for c in report.failed))
    if method in ENGINE_OF and time_to_pass:
        extra.update(_time_to_pass(posterior, model, args, seed, comparison.passes(), seconds, ENGINE_OF[method]))
    if method == "pyro_stein_ctf":
        extra.update(step_cost(model, args, seed))
    low, high = comparison.sd_ratio_range
    row.update(
        verdict="PASS" if comparison.passes() else "FAIL",
        mean_err=comparison.worst_mean_error,
        sd_lo=low,
        sd_hi=high,
        corr_err=comparison.worst_correlation_error,
        num_corr=len(comparison.correlation_error),
        seconds=seconds,
        draws_per_s=draws_per_s,
        per_param={n: [float(e), float(r)] for n, e, r in zip(comparison.names, comparison.mean_error, comparison.sd_ratio)},
        **extra,
    )
    return row


def step_cost(model: Callable, args: tuple, seed: int) -> dict[str, float]:
    """Milliseconds per training step of each engine with its defaults, on one guide
    (so the same particle count and model), timed alternately in this process."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pyro_stein.AutoNeuralSampler(model)
    guide(*args)
    optim = pyro.optim.Adam({"lr": 1e-3})
    engines = {"asvgd": pyro_stein.AmortizedSVGD(), "ctf": pyro_stein.CTFDistillation()}
    svis = {name: SVI(model, guide, optim, loss=engine) for name, engine in engines.items()}
    for svi in svis.values():
        for _ in range(COST_STEPS):
            svi.step(*args)
    elapsed = dict.fromkeys(svis, 0.0)
    for _ in range(COST_STEPS):
        for name, svi in svis.items():
            start = time.perf_counter()
            svi.step(*args)
            elapsed[name] += time.perf_counter() - start
    ms = {name: 1000 * total / COST_STEPS for name, total in elapsed.items()}
    return {"asvgd_step_ms": ms["asvgd"], "ctf_step_ms": ms["ctf"], "ctf_step_vs_asvgd": ms["ctf"] / ms["asvgd"]}


def _time_to_pass(
    posterior: Posterior, model: Callable, args: tuple, seed: int, passes: bool, seconds: float, engine: str
) -> dict:
    """The shortest run of ``fit`` (``num_steps`` from ``STEP_LADDER``, then the default)
    whose draws PASS, and its time."""
    for num_steps in STEP_LADDER:
        pyro.clear_param_store()
        draws, ladder_seconds, _, _ = run_pyro_stein(model, args, seed, num_steps, engine)
        ladder = compare_draws(posterior.reference_columns(draws), posterior.reference_draws())
        if ladder.passes():
            return {"steps_to_pass": num_steps, "time_to_pass": ladder_seconds}
    if passes:
        return {"steps_to_pass": pyro_stein.fitting.DEFAULTS["num_steps"], "time_to_pass": seconds}
    return {}


def _evaluate_posterior(job: tuple) -> list[dict[str, Any]]:
    """Every method on one posterior (a unit of work for ``--jobs``)."""
    folder, name, methods, seed, threads, time_to_pass = job
    torch.set_num_threads(threads)
    posterior = PosteriorDatabase(folder).posterior(name)
    group = []
    for method in methods:
        group.append(evaluate(posterior, method, seed, time_to_pass))
        print(json.dumps(group[-1]), flush=True)
    return group


def _cell(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:.3g}"
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = ["posterior", "method", "verdict", "reliable", "failed_checks", "mean_err", "sd_lo", "sd_hi", "corr_err", "seconds",
               "steps", "check_seconds", "time_vs_nuts", "steps_to_pass", "time_to_pass", "pass_time_vs_nuts", "draws_per_s", "rate_vs_nuts", "ksd", "ctf_step_vs_asvgd",
               "ctf_time_vs_asvgd"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * 5 + "---:|" * (len(columns) - 5)]
    for row in rows:
        cells = [_cell(row.get(c)) if c not in ("seconds", "draws_per_s") else _cell(row.get(c), 1) for c in columns]
        if row.get("verdict") == "ERROR":
            cells[5] = row["error"].replace("|", "/")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posteriordb", required=True, help="a posteriordb posterior_database folder")
    parser.add_argument("--posteriors", default=None, help="comma-separated names (default: all with a port)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="posteriors run in parallel, one process each")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--no-time-to-pass", action="store_true", help="skip the shorter fits of time_to_pass")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    db = PosteriorDatabase(opts.posteriordb)
    names = opts.posteriors.split(",") if opts.posteriors else db.names(with_port=True)
    methods = opts.methods.split(",")
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(RUNNERS)}")
    jobs = [(opts.posteriordb, name, methods, opts.seed, opts.threads, not opts.no_time_to_pass) for name in names]
    if opts.jobs > 1:
        with ProcessPoolExecutor(opts.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            groups = list(pool.map(_evaluate_posterior, jobs))
    else:
        groups = [_evaluate_posterior(job) for job in jobs]
    rows = []
    for group in groups:
        nuts = next((r for r in group if r["method"] == "nuts" and "seconds" in r), None)
        asvgd = next((r for r in group if r["method"] == "pyro_stein" and "seconds" in r), None)
        for row in group:
            if asvgd is not None and row["method"] == "pyro_stein_ctf" and "seconds" in row:
                row["ctf_time_vs_asvgd"] = row["seconds"] / asvgd["seconds"]
            if nuts is not None and "seconds" in row:
                row["time_vs_nuts"] = row["seconds"] / nuts["seconds"]
                if "time_to_pass" in row:
                    row["pass_time_vs_nuts"] = row["time_to_pass"] / nuts["seconds"]
                row["rate_vs_nuts"] = row["draws_per_s"] / nuts["draws_per_s"]
        rows.extend(group)
    table = markdown(rows)
    print()
    print(table)
    if opts.out:
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "command": "python benchmarks/posteriordb.py " + " ".join(f"--{k} {v}" for k, v in vars(opts).items() if v is not None),
            "torch": torch.__version__, "pyro": pyro.__version__, "pyro_stein": pyro_stein.__version__,
            "python": platform.python_version(), "threads": opts.threads, "num_draws": NUM_DRAWS,
        }
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=float))
        out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
