"""CTF distillation: matching distributions vs regressing pairs, and the two-mode toy.

Three measurements, one run, one process:

1. **Collapse of the paired regression.**  On a 2-D correlated Gaussian, the sampler
   starts exact (the Laplace approximation of a Gaussian is the posterior) and is trained
   by :class:`pyro_stein.CTFDistillation` with each distillation objective: the shipped
   sliced Wasserstein and energy distance, and the paired L2 regression of each draw onto
   its own evolved particle (``PairedL2`` below; deliberately not shipped).  The sampler's
   sd ratio along the principal axes is printed every 100 steps.
2. **Chen et al.'s 2-D toy** ``U(z) = 1/2 ((|z| - 2)/0.4)^2 - ln(exp(-1/2 ((z1 - 2)/0.6)^2)
   + exp(-1/2 ((z1 + 2)/0.6)^2))``: ``fit(engine="ctf")`` and ``fit(engine="asvgd")`` with
   their defaults, three seeds each; the mass of each mode (``z1 > 0``) from 20000 draws,
   and a figure of both samplers over the target (``docs/figures/ctf_ring.png``).
3. **Per-step cost** of the two engines with their defaults (512 particles) on both
   targets, timed alternately on one guide by ``posteriordb.step_cost`` (which reports it
   per posterior there).

Usage::

    python benchmarks/ctf_distillation.py --out benchmarks/results/ctf_distillation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from posteriordb import step_cost  # the same alternating timer as the posteriordb column
from pyro.infer import SVI

import pyro_stein
from pyro_stein import AutoNeuralSampler, CTFDistillation

MEAN = torch.tensor([1.0, -1.0])
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]]) * torch.tensor([[1.0], [2.0]]) * torch.tensor([[1.0, 2.0]])
COLLAPSE_STEPS = 1000
#: Half-width of the low-density band between the two modes whose mass is reported.
GAP = 1.0
NUM_DRAWS = 20000


class PairedL2(CTFDistillation):
    """The objective the issue warns about: move each draw towards its own evolved particle.

    The expected update is the flow's conditional mean, i.e. gradient ascent on log p: the
    sampler shrinks onto the mode.  Kept here to measure it, not shipped.
    """

    def match(self, x, y, scale_tril=None):
        if y.shape != x.shape:
            raise ValueError("paired matching needs every particle valid")
        return y - x, (y - x).pow(2).sum(-1).mean()


def gaussian_model():
    pyro.sample("x", dist.MultivariateNormal(MEAN, COV))


def ring_energy(z: torch.Tensor) -> torch.Tensor:
    bumps = torch.logaddexp(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2) / 0.6) ** 2)
    return 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2 - bumps


def ring_model():
    z = pyro.sample("z", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    pyro.factor("energy", -ring_energy(z))


def principal_sd_ratio(draws: torch.Tensor) -> list[float]:
    evals, evecs = torch.linalg.eigh(COV)
    return ((draws - MEAN) @ evecs).std(0).div(evals.sqrt()).tolist()


def collapse(seed: int) -> dict[str, list]:
    trajectories = {}
    for name, engine_class, kwargs in (
        ("sliced_wasserstein", CTFDistillation, {}),
        ("energy", CTFDistillation, {"matching": "energy"}),
        ("paired_l2", PairedL2, {}),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = AutoNeuralSampler(gaussian_model)
        guide()
        engine = engine_class(**kwargs)
        svi = SVI(gaussian_model, guide, pyro.optim.Adam({"lr": 1e-2, "betas": (0.9, 0.9)}), loss=engine)
        rows = []
        for step in range(COLLAPSE_STEPS + 1):
            if step % 100 == 0:
                rows.append([step, *principal_sd_ratio(guide.sample_latent_batch(NUM_DRAWS))])
            if step < COLLAPSE_STEPS:
                svi.step()
        trajectories[name] = rows
        print(name, "principal-axis sd ratios (step, minor, major):", [[r[0], round(r[1], 3), round(r[2], 3)] for r in rows[::2]], flush=True)
    return trajectories


def ring(seeds: list[int]) -> dict[str, list]:
    results: dict[str, list] = {"ctf": [], "asvgd": []}
    draws = {}
    for engine in results:
        for seed in seeds:
            fit = pyro_stein.fit(ring_model, engine=engine, seed=seed, progress=False)
            z = fit.sample(NUM_DRAWS)["z"]
            right = float((z[:, 0] > 0).float().mean())
            gap = float((z[:, 0].abs() < GAP).float().mean())
            on_ring = float((z.norm(dim=-1) - 2).abs().median())
            results[engine].append({"seed": seed, "right_mode_mass": right, "gap_mass": gap,
                                    "median_distance_to_ring": on_ring, "seconds": fit.seconds, "ksd": fit.ksd})
            print(engine, "seed", seed, f"right-mode mass {right:.3f}, mass at |z1| < {GAP} {gap:.3f}, "
                  f"median |r - 2| {on_ring:.3f}, {fit.seconds:.1f} s", flush=True)
            if seed == seeds[0]:
                draws[engine] = z[:2000].numpy()
    results["figure_draws"] = draws
    return results


def ring_reference() -> dict[str, float]:
    """The target's own figures, by quadrature on a fine grid."""
    grid = torch.linspace(-5, 5, 2001, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1)
    weight = torch.exp(-ring_energy(zz))
    weight = weight / weight.sum()
    gap = float(weight[zz[..., 0].abs() < GAP].sum())
    return {"right_mode_mass": float(weight[zz[..., 0] > 0].sum()), "gap_mass": gap}


def figure(draws: dict[str, np.ndarray], results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-3.5, 3.5, 300)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1)
    density = torch.exp(-ring_energy(zz)).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].contourf(grid, grid, density, levels=30, cmap="Blues")
    axes[0].set_title("target exp(-U(z))")
    for ax, engine, label in ((axes[1], "ctf", "CTF distillation"), (axes[2], "asvgd", "Amortized SVGD")):
        ax.contour(grid, grid, density, levels=8, cmap="Blues", linewidths=0.8)
        ax.scatter(draws[engine][:, 0], draws[engine][:, 1], s=2, alpha=0.4, color="C3")
        masses = ", ".join(f"{r['right_mode_mass']:.2f}" for r in results[engine])
        ax.set_title(f"{label} (seed {results[engine][0]['seed']})\nright-mode mass per seed: {masses}", fontsize=9)
    for ax in axes:
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/ctf_distillation")
    parser.add_argument("--figure", default="docs/figures/ctf_ring.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only-ring", action="store_true", help="skip the collapse comparison and the step cost")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    out = {"collapse": collapse(opts.seed)} if not opts.only_ring else {}
    ring_results = ring([opts.seed, opts.seed + 1, opts.seed + 2])
    figure(ring_results.pop("figure_draws"), ring_results, Path(opts.figure))
    out["ring"] = ring_results
    out["ring"]["target"] = ring_reference()
    print("target:", out["ring"]["target"])
    path = Path(opts.out).with_suffix(".json")
    if opts.only_ring:  # keep the other sections of an earlier full run
        out = {**(json.loads(path.read_text()) if path.exists() else {}), "ring": out["ring"]}
    else:
        out["step_cost"] = {"gaussian_2d": step_cost(gaussian_model, (), opts.seed),
                            "ring_2d": step_cost(ring_model, (), opts.seed)}
        print("per-step cost (ms):", json.dumps(out["step_cost"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path} and {opts.figure}")


if __name__ == "__main__":
    main()
