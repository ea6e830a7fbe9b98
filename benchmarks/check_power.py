"""How the stationarity check's budget (draws, Langevin steps) trades time for power.

The draws are 4000 NUTS draws of the diabetes regression (``tutorials/data/diabetes_nuts.npz``,
the main job's model), scaled about their mean by a factor in the model's unconstrained
coordinates (``log sigma`` for the noise scale): 1.0 are posterior draws (the check must
pass them), 0.85-0.9 a sampler too narrow, 1.1-1.15 too wide (it must flag them: the
benchmarks' PASS verdict allows sd ratios in [0.9, 1.1]).  Each row is
`pyro_stein.check_reliability` with ``CHECK_DRAWS`` and ``MALA_STEPS`` set to each variant:
the stationarity verdict, its figure and the seconds the whole check took.

Usage::

    python benchmarks/check_power.py --variants 2000,50 2000,30 1000,50
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pyro_stein

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import REFERENCE, data, pyro_model  # noqa: E402

reliability = importlib.import_module("pyro_stein.diagnostics.reliability")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["2000,50", "2000,30", "1000,50"], help="draws,steps")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.85, 0.9, 1.0, 1.1, 1.15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    variants = [tuple(int(v) for v in variant.split(",")) for variant in options.variants]
    model = pyro_model()
    x, y = (torch.from_numpy(a) for a in data())
    reference = torch.tensor(np.load(REFERENCE)["draws"], dtype=torch.float32)
    unconstrained = torch.cat([reference[:, :-1], reference[:, -1:].log()], 1)
    mean = unconstrained.mean(0)
    print("| scale | seed | " + " | ".join(f"{d} draws, {s} steps" for d, s in variants) + " |")
    print("|---:|---:|" + "---|" * len(variants))
    for scale in options.scales:
        for seed in options.seeds:
            order = torch.randperm(len(unconstrained), generator=torch.Generator().manual_seed(seed))
            z = mean + scale * (unconstrained[order] - mean)
            draws = {"alpha": z[:, 0], "beta": z[:, 1:-1], "sigma": z[:, -1].exp()}
            cells = []
            for num_draws, num_steps in variants:
                reliability.CHECK_DRAWS, reliability.MALA_STEPS = num_draws, num_steps
                started = time.perf_counter()
                report = pyro_stein.check_reliability(model, draws, x, y, seed=seed)
                check = report["stationarity"]
                verdict = "pass" if check.passed else "FLAG"
                cells.append(f"{verdict} {check.figure:+.3f}, {time.perf_counter() - started:.1f} s")
            print(f"| {scale} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
