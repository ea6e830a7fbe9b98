"""The reliability verdict on hard targets: is every wrong fit flagged, and no right one?

Each target has a known answer.  For each engine, ``pyro_stein.fit`` runs with its defaults
(no tuning; seed 0) and 20000 draws of the fitted sampler give the figure the target is
judged on; the row then says whether that figure is within tolerance of the truth
(``accurate``), what the fit's verdict was (``reliable``, and the check that fired), and
whether it is a *silent failure* (inaccurate but ``reliable=True``) or a *false alarm*
(accurate but flagged).

Hard targets (the categories of the reliability issue):

* ``funnel_10d``: Neal's funnel, ``v ~ N(0, 3)``, nine ``x_i ~ N(0, exp(v/2))``; figure: the
  mean and sd of ``v`` (truth 0 and 3; accurate within 0.3 and 10%).
* ``cauchy_1d``: a standard Cauchy; the 98% quantile of ``|z|`` (31.8; within 20%).
* ``student_t2_2d``: two independent Student-t with 2 degrees of freedom; the 95% quantile
  of ``|z|`` (4.30; within 10%).
* ``wall_factor``: ``N(0, 1)`` cut at 0 by ``pyro.factor(-inf)``; the mean (0.798; within
  0.05) and the fraction of draws beyond the wall (none).
* ``wall_support``: the same posterior written with a support (``HalfNormal``).
* ``mixture_30_70``: ``0.3 N(-4, 1) + 0.7 N(4, 1)``; the mass left of 0 (0.30; within 0.05).
* ``gauss_400d``: independent Gaussian, sds log-spaced from 0.1 to 10; sd ratios (within 10%)
  and mean errors (within 0.1 sd).
* ``gauss_2000d``: standard Gaussian in 2000 dimensions, 200 steps (the Laplace start is
  exact); sd ratios within 10%.
* ``eight_schools_centred``: the centred eight schools, a funnel in ``(mu, tau, theta)``;
  the sd of ``log tau`` against the non-centred NUTS reference (0.99... below).

Well-behaved targets, which must not be flagged: the Gaussians, Gamma-Poisson and
Beta-Binomial of ``benchmarks/accuracy.py``, the diabetes regression (against its NUTS
draws) and the non-centred eight schools.

Usage::

    python benchmarks/hard_targets.py                       # both engines, every target
    python benchmarks/hard_targets.py --engines asvgd --targets funnel_10d,cauchy_1d
    python benchmarks/hard_targets.py --out benchmarks/results/hard_targets.json

First, for every target with an exact sampler, ``--exact-seeds`` sets of exact posterior
draws go through ``pyro_stein.check_reliability``: how often the checks flag draws that are
right (the false-alarm rate).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyro_stein

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (the well-behaved targets)

NUM_DRAWS = 20000

Judge = Callable[[dict[str, torch.Tensor]], tuple[str, bool]]


def _quantile_abs(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.abs().double().flatten()[:200000], q))


def funnel():
    def model():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)).expand([9]).to_event(1))

    def judge(d):
        mean, sd = float(d["v"].mean()), float(d["v"].std())
        return f"v: mean {mean:.2f}, sd {sd:.2f}", abs(mean) < 0.3 and abs(sd / 3.0 - 1) < 0.1

    return model, (), judge, "v: mean 0, sd 3"


def cauchy():
    def model():
        pyro.sample("z", dist.Cauchy(0.0, 1.0))

    truth = math.tan(0.49 * math.pi)

    def judge(d):
        q = _quantile_abs(d["z"], 0.98)
        return f"q98 |z| {q:.1f}", abs(q / truth - 1) < 0.2

    return model, (), judge, f"q98 |z| {truth:.1f}"


def student_t2():
    def model():
        pyro.sample("z", dist.StudentT(2.0, 0.0, 1.0).expand([2]).to_event(1))

    truth = 4.303  # t quantile 0.975 with 2 degrees of freedom

    def judge(d):
        q = _quantile_abs(d["z"], 0.95)
        return f"q95 |z| {q:.2f}", abs(q / truth - 1) < 0.1

    return model, (), judge, f"q95 |z| {truth:.2f}"


def _half_normal_judge(d):
    x = d["x"].double()
    mean, beyond = float(x.mean()), float((x < 0).double().mean())
    return f"mean {mean:.3f}, {beyond:.1%} beyond", abs(mean - math.sqrt(2 / math.pi)) < 0.05 and beyond == 0.0


def wall_factor():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("wall", torch.where(x < 0.0, torch.tensor(float("-inf")), torch.tensor(0.0)))

    return model, (), _half_normal_judge, "mean 0.798, none beyond"


def wall_support():
    def model():
        pyro.sample("x", dist.HalfNormal(1.0))

    return model, (), _half_normal_judge, "mean 0.798, none beyond"


MIXTURE = dist.MixtureSameFamily(dist.Categorical(torch.tensor([0.3, 0.7])), dist.Normal(torch.tensor([-4.0, 4.0]), 1.0))


def mixture():
    def model():
        pyro.sample("x", MIXTURE)

    def judge(d):
        left = float((d["x"] < 0).double().mean())
        return f"mass left of 0: {left:.3f}", abs(left - 0.3) < 0.05

    return model, (), judge, "mass left of 0: 0.300"


def _gaussian_judge(sds: torch.Tensor) -> Judge:
    def judge(d):
        z = d["z"].double()
        ratios = z.std(0) / sds
        errors = (z.mean(0) / sds).abs()
        ok = bool(((ratios - 1).abs() < 0.1).all() and (errors < 0.1).all())
        return f"sd ratios {ratios.min():.2f} to {ratios.max():.2f}, mean err {errors.max():.2f}", ok

    return judge


def gauss(dim: int, low: float, high: float):
    def make():
        sds = torch.logspace(math.log10(low), math.log10(high), dim)

        def model():
            pyro.sample("z", dist.Normal(torch.zeros(dim), sds).to_event(1))

        return model, (), _gaussian_judge(sds.double()), "sd ratios 1, mean err 0"

    return make


EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
#: ``P(tau < 1)`` under the non-centred NUTS reference of ``tutorials/eight_schools.py``.
EIGHT_P_TAU_BELOW_1 = 0.199


def _eight_judge(d):
    p = float((d["tau"] < 1).double().mean())
    return f"P(tau<1) {p:.3f}", abs(p - EIGHT_P_TAU_BELOW_1) < 0.05


def eight_centred():
    def model(sigma, y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", len(sigma)):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)

    return model, (EIGHT_SIGMA, EIGHT_Y), _eight_judge, f"P(tau<1) {EIGHT_P_TAU_BELOW_1}"


def eight_noncentred():
    def model(sigma, y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", len(sigma)):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.deterministic("theta", mu + tau * theta_tilde)
            pyro.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    return model, (EIGHT_SIGMA, EIGHT_Y), _eight_judge, f"P(tau<1) {EIGHT_P_TAU_BELOW_1}"


def from_accuracy(name: str):
    """A target of ``benchmarks/accuracy.py``, judged by its PASS rule."""

    def make():
        model, args, extract, mean, cov, _ = accuracy.TARGETS[name]()

        def judge(d):
            out = accuracy.score(extract(d), mean, cov)
            ok = out["mean_err"] <= 0.1 and 0.9 <= out["sd_lo"] and out["sd_hi"] <= 1.1
            return f"mean err {out['mean_err']:.2f}, sd ratios {out['sd_lo']:.2f} to {out['sd_hi']:.2f}", ok

        return model, args, judge, "mean err 0, sd ratios 1"

    return make


#: name -> (maker, hard?, steps or None for fit's default)
TARGETS: dict[str, tuple[Callable, bool, int | None]] = {
    "funnel_10d": (funnel, True, None),
    "cauchy_1d": (cauchy, True, None),
    "student_t2_2d": (student_t2, True, None),
    "wall_factor": (wall_factor, True, None),
    "wall_support": (wall_support, True, None),
    "mixture_30_70": (mixture, True, None),
    "gauss_400d": (gauss(400, 0.1, 10.0), True, None),
    "gauss_2000d": (gauss(2000, 1.0, 1.0), True, 200),
    "eight_schools_centred": (eight_centred, True, None),
    "eight_schools_noncentred": (eight_noncentred, False, None),
    "gauss_corr99_d5": (from_accuracy("gauss_corr99_d5"), False, None),
    "gauss_scales_f64": (from_accuracy("gauss_scales_1e-3_1e2_f64"), False, None),
    "gauss_cond1e3_d50": (from_accuracy("gauss_cond1e3_d50"), False, None),
    "gamma_poisson": (from_accuracy("gamma_poisson"), False, None),
    "beta_binomial": (from_accuracy("beta_binomial"), False, None),
    "diabetes": (from_accuracy("diabetes"), False, None),
}


def _exact_from_accuracy(name: str, site: str):
    def draw(num: int) -> dict[str, torch.Tensor]:
        model, args, extract, mean, cov, _ = accuracy.TARGETS[name]()
        values = dist.MultivariateNormal(mean, cov).sample((num,))
        return {site: values.to(torch.float64 if name.endswith("f64") else torch.float32)}

    return draw


def _funnel_draws(num: int) -> dict[str, torch.Tensor]:
    v = 3.0 * torch.randn(num)
    return {"v": v, "x": torch.randn(num, 9) * torch.exp(v / 2).unsqueeze(-1)}


def _gauss_draws(dim: int, low: float, high: float):
    return lambda num: {"z": torch.randn(num, dim) * torch.logspace(math.log10(low), math.log10(high), dim)}


#: Exact posterior draws, for the false-alarm rates of the checks (``--exact-seeds``).
EXACT: dict[str, Callable[[int], dict[str, torch.Tensor]]] = {
    "funnel_10d": _funnel_draws,
    "cauchy_1d": lambda n: {"z": dist.Cauchy(0.0, 1.0).sample((n,))},
    "student_t2_2d": lambda n: {"z": dist.StudentT(2.0).sample((n, 2))},
    "wall_support": lambda n: {"x": dist.HalfNormal(1.0).sample((n,))},
    "mixture_30_70": lambda n: {"x": MIXTURE.sample((n,))},
    "gauss_400d": _gauss_draws(400, 0.1, 10.0),
    "gauss_2000d": _gauss_draws(2000, 1.0, 1.0),
    "gauss_corr99_d5": _exact_from_accuracy("gauss_corr99_d5", "x"),
    "gauss_scales_f64": _exact_from_accuracy("gauss_scales_1e-3_1e2_f64", "x"),
    "gauss_cond1e3_d50": _exact_from_accuracy("gauss_cond1e3_d50", "x"),
    "gamma_poisson": lambda n: {"lam": dist.Gamma(2.0 + 3.0, 1.0 + 4.0).sample((n,))},
    "beta_binomial": lambda n: {"p": dist.Beta(10.0, 2.0).sample((n,))},
}


def exact_false_alarms(names: list[str], seeds: int) -> list[dict]:
    """How often the checks flag exact posterior draws (``pyro_stein.check_reliability`` on
    as many draws as a fit's check uses), per target, over ``seeds`` sets of draws."""
    from pyro_stein.diagnostics.reliability import CHECK_DRAWS

    rows = []
    for name in names:
        if name not in EXACT:
            continue
        model, args, _, _ = TARGETS[name][0]()
        flagged: dict[str, int] = {}
        seconds = []
        for seed in range(seeds):
            torch.manual_seed(1000 + seed)
            draws = EXACT[name](CHECK_DRAWS)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                report = pyro_stein.check_reliability(model, draws, *args, seed=seed)
            seconds.append(time.perf_counter() - start)
            for check in report.failed:
                flagged[check.name] = flagged.get(check.name, 0) + 1
        any_flag = sum(flagged.values())
        row = {"target": name, "seeds": seeds, "flagged": flagged, "check_seconds": float(np.median(seconds))}
        rows.append(row)
        print(f"exact draws of {name:<22} flagged {any_flag} of {seeds} times {flagged or ''} "
              f"(median {row['check_seconds']:.2f} s)", flush=True)
    return rows


def run(name: str, engine: str, seed: int, save: Path | None) -> dict:
    maker, hard, steps = TARGETS[name]
    model, args, judge, truth = maker()
    pyro.clear_param_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        result = pyro_stein.fit(model, *args, engine=engine, num_steps=steps, seed=seed, progress=False)
        seconds = time.perf_counter() - start
    draws = result.sample(NUM_DRAWS)
    figure, accurate = judge(draws)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        latents = result.guide.sample_latent_batch(8000)
        torch.save({"latents": latents, "figure": figure, "accurate": accurate}, save / f"{name}-{engine}.pt")
    reliable = getattr(result, "reliable", True)
    report = getattr(result, "reliability", None)
    failed = [] if report is None else [check.name for check in report.failed]
    row = {
        "target": name,
        "engine": engine,
        "hard": hard,
        "came_out": figure,
        "truth": truth,
        "accurate": accurate,
        "reliable": reliable,
        "failed_checks": failed,
        "silent_failure": (not accurate) and reliable,
        "false_alarm": accurate and not reliable,
        "seconds": seconds,
        "check_seconds": None if report is None else report.seconds,
        "ksd": result.ksd,
        "warnings": sorted({type(w.message).__name__ for w in caught}),
    }
    if report is not None:
        row["figures"] = {check.name: check.figure for check in report.checks}
    return row


def print_table(rows: list[dict]) -> None:
    header = f"{'target':<26}{'engine':<7}{'came out':<44}{'truth':<26}{'accurate':<9}{'reliable':<9}{'verdict':<16}{'s':>7}{'check s':>8}"
    print(header)
    for row in rows:
        if row["silent_failure"]:
            verdict = "SILENT FAILURE"
        elif row["false_alarm"]:
            verdict = "FALSE ALARM"
        elif not row["accurate"]:
            verdict = "flagged: " + ",".join(row["failed_checks"])
        else:
            verdict = "ok"
        check = "" if row["check_seconds"] is None else f"{row['check_seconds']:.1f}"
        print(
            f"{row['target']:<26}{row['engine']:<7}{row['came_out']:<44}{row['truth']:<26}{str(row['accurate']):<9}"
            f"{str(row['reliable']):<9}{verdict:<16}{row['seconds']:>7.1f}{check:>8}"
        )
    silent = sum(r["silent_failure"] for r in rows)
    alarms = sum(r["false_alarm"] for r in rows)
    accurate = [r for r in rows if r["accurate"]]
    share = [r["check_seconds"] / (r["seconds"] - r["check_seconds"]) for r in rows if r["check_seconds"] is not None]
    print(f"\nsilent failures: {silent} of {sum(not r['accurate'] for r in rows)} inaccurate fits; "
          f"false alarms: {alarms} of {len(accurate)} accurate fits")
    if share:
        print(f"checks' time over the rest of the fit: median {np.median(share):.1%}, max {max(share):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--engines", default="asvgd,ctf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--save-latents", type=Path, default=None, help="keep 8000 unconstrained draws per fit here")
    parser.add_argument("--exact-seeds", type=int, default=20,
                        help="sets of exact posterior draws per target for the false-alarm rates (0: none)")
    opts = parser.parse_args()
    exact_rows = exact_false_alarms(opts.targets.split(","), opts.exact_seeds) if opts.exact_seeds else []
    rows = []
    for engine in opts.engines.split(","):
        for name in opts.targets.split(","):
            row = run(name, engine, opts.seed, opts.save_latents)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print_table(rows)
    if opts.out is not None:
        meta = {"torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(), "seed": opts.seed}
        opts.out.write_text(json.dumps({"meta": meta, "rows": rows, "exact_draws": exact_rows}, indent=1))


if __name__ == "__main__":
    main()
