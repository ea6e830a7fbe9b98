"""SteinGAN on scikit-learn's digits against its no-repulsion ablation and a standard GAN.

    python benchmarks/steingan_digits.py --epochs 100 --out benchmarks/results/steingan_digits

Runs, one after another, with the same generator architecture, data split, seed and
classifier metrics (pyro_stein.contrib.imaging.metrics):

* SteinGAN with the autoencoder energy (the paper's model);
* the same without the kernel's repulsive term (``no-repulsion``);
* a standard GAN (non-saturating, MLP discriminator);
* SteinGAN with the Gaussian-Bernoulli RBM energy, whose exact test log-likelihood is
  tracked every epoch, and its no-repulsion ablation;
* class-conditional SteinGAN (the joint energy p(x, y)), with the share of its draws that
  the classifier assigns to the digit they were asked for.

Prints the table (also written as ``table.md`` and ``results.json`` in ``--out``) and writes
``samples.png``, the runs' sample grids side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNS = [  # label, method, energy, class-conditional
    ("SteinGAN (AE energy)", "steingan", "ae", False),
    ("no repulsion (AE energy)", "no-repulsion", "ae", False),
    ("GAN", "gan", "ae", False),
    ("SteinGAN (RBM energy)", "steingan", "rbm", False),
    ("no repulsion (RBM energy)", "no-repulsion", "rbm", False),
    ("SteinGAN, class-conditional", "steingan", "ae", True),
]
COLUMNS = ["classifier_frechet", "inception_score", "class_entropy", "diversity", "coverage", "rbm_test_log_likelihood",
           "conditional_accuracy", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/steingan_digits")
    parser.add_argument("--sensitivity", action="store_true",
                        help="only the autoencoder SteinGAN's sensitivity to kernel bandwidth, code width and energy rate")
    options = parser.parse_args()
    if options.sensitivity:
        sensitivity(options.epochs, options.seed)
        return

    from pyro_stein.contrib.imaging.reports import to_json
    from pyro_stein.contrib.steingan.experiment import run_experiment

    out = Path(options.out)
    results = {}
    for label, method, energy, conditional in RUNS:
        folder = out / (f"{method}_{energy}" if method != "gan" else "gan")
        folder = folder.with_name(folder.name + "_conditional") if conditional else folder
        report = run_experiment("digits", energy, method=method, epochs=options.epochs, out=folder,
                                seed=options.seed, progress=False, conditional=conditional)
        results[label] = {"folder": str(folder), **report}
        print(label, {k: round(v, 3) for k, v in report["final"].items() if k in COLUMNS}, f"{report['seconds']:.0f} s",
              flush=True)
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for label, result in results.items():
        final = {**result["final"], "seconds": result["seconds"]}
        cells = [f"{final[c]:.3f}" if c in final else "" for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    slim = {label: {k: v for k, v in r.items() if k != "history"} | {"history": r["history"]} for label, r in results.items()}
    (out / "results.json").write_text(to_json(slim))
    figure(results, out / "samples.png")


def sensitivity(epochs: int, seed: int) -> None:
    """The autoencoder SteinGAN with one setting changed at a time, against the same metrics."""
    import torch

    from pyro_stein.contrib.imaging.data import load_digits
    from pyro_stein.contrib.imaging.energies import AutoencoderEnergy
    from pyro_stein.contrib.imaging.generator import Generator
    from pyro_stein.contrib.imaging.metrics import ClassifierMetrics
    from pyro_stein.contrib.imaging.training import train
    from pyro_stein.contrib.steingan.training import SteinGAN
    from pyro_stein.ops.kernels import RBFKernel

    data = load_digits()
    x = data.train_images.reshape(len(data.train_images), -1)
    metrics = ClassifierMetrics.for_dataset(data, seed=seed)
    variants = {
        "defaults": {},
        "kernel bandwidth x3": {"bandwidth_factor": 3.0},
        "kernel bandwidth x10": {"bandwidth_factor": 10.0},
        "code width 32": {"code_dim": 32},
        "energy rate 3e-4": {"energy_lr": 3e-4},
    }
    for label, change in variants.items():
        torch.manual_seed(seed)
        energy = AutoencoderEnergy(x.shape[1], code_dim=change.get("code_dim", 16))
        gan = SteinGAN(energy, Generator(x.shape[1]), kernel=RBFKernel(bandwidth_factor=change.get("bandwidth_factor", 1.0)),
                       energy_lr=change.get("energy_lr", 1e-4))
        train(gan, x, epochs=epochs, seed=seed, progress=False)
        figures = metrics(gan.sample(2000, torch.Generator().manual_seed(seed)).clamp(0, 1).reshape(-1, 1, 8, 8))
        print(f"{label:<22}", {k: round(v, 3) for k, v in figures.items()}, flush=True)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    columns = 3
    rows = -(-len(results) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    for ax, (label, result) in zip(axes.flat, results.items()):
        ax.imshow(mpimg.imread(Path(result["folder"]) / "samples.png"))
        fd = result["final"].get("classifier_frechet", float("nan"))
        ax.set_title(f"{label}\nclassifier-Frechet {fd:.1f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
