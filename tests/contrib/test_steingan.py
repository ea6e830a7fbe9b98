"""SteinGAN case study: data loaders, energies, metrics, the trainer and the command line."""

import gzip
import math

import numpy as np
import pytest
import torch

from pyro_stein.contrib.imaging.data import load_dataset, load_digits, load_mnist
from pyro_stein.contrib.imaging.energies import AutoencoderEnergy, GaussianBernoulliRBM


def test_digits_split_is_stratified_and_deterministic():
    data = load_digits()
    assert data.train_images.shape[1:] == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_images) + len(data.test_images) == 1797
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) == 1.0
    counts = torch.bincount(data.test_labels, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46  # a quarter of each class (174-183 images)
    again = load_dataset("digits")
    assert torch.equal(again.test_labels, data.test_labels)


def _write_idx(path, array, magic, compress=False):
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _fake_mnist(folder, compress=False):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), 0x803, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n), 0x801, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_folder(tmp_path, compress):
    _fake_mnist(tmp_path / "mnist", compress)
    data = load_mnist(tmp_path / "mnist")
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    assert float(data.train_images.max()) <= 1.0


def test_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 28, 28)), y_train=np.arange(6),
             x_test=rng.integers(0, 256, (3, 28, 28)), y_test=np.arange(3))
    data = load_dataset(path)
    assert data.train_images.shape == (6, 1, 28, 28) and data.num_classes == 6


def test_mnist_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MNIST data"):
        load_mnist(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path / "empty")
    _fake_mnist(tmp_path / "bad")
    (tmp_path / "bad" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x99" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic number"):
        load_mnist(tmp_path / "bad")
    _fake_mnist(tmp_path / "short")
    path = tmp_path / "short" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="header says shape"):
        load_mnist(tmp_path / "short")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_mnist(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_mnist(tmp_path / "junk.npz")
    np.savez(tmp_path / "mismatch.npz", x_train=np.zeros((3, 4, 4)), y_train=np.zeros(2),
             x_test=np.zeros((1, 4, 4)), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="3 train images but labels"):
        load_mnist(tmp_path / "mismatch.npz")


def test_rbm_log_partition_against_quadrature():
    """Exact log Z against a brute-force 2-D quadrature of exp(-F(v)) on a tiny RBM."""
    torch.manual_seed(0)
    rbm = GaussianBernoulliRBM(dim=2, num_hidden=3, init_scale=0.8).double()
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.tensor([0.3, -0.2]))
        rbm.log_scale.copy_(torch.tensor([-0.3, 0.2]))
        rbm.hidden_bias.copy_(torch.tensor([0.5, -1.0, 0.2]))
    grid = torch.linspace(-12, 12, 2401, dtype=torch.float64)
    v = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    cell = (grid[1] - grid[0]) ** 2
    with torch.no_grad():
        brute = torch.logsumexp(rbm(v), 0) + torch.log(cell)
        exact = rbm.log_partition()
        # ... and the normalized density integrates to one.
        total = torch.exp(rbm.log_prob(v)).sum() * cell
    assert abs(float(brute - exact)) < 1e-6
    assert abs(float(total) - 1.0) < 1e-6


def test_rbm_free_energy_sums_out_the_hidden_units():
    torch.manual_seed(1)
    rbm = GaussianBernoulliRBM(dim=5, num_hidden=4, init_scale=0.5).double()
    v = torch.randn(7, 5, dtype=torch.float64)
    scale = rbm.log_scale.exp()
    h = rbm.hidden_states.double()
    energy = (((v - rbm.visible_bias) ** 2) / (2 * scale**2)).sum(-1)[:, None] - h @ rbm.hidden_bias - (v / scale) @ rbm.weight @ h.T
    torch.testing.assert_close(rbm(v), torch.logsumexp(-energy, -1))


def test_energy_shapes_and_gradients():
    torch.manual_seed(0)
    x = torch.rand(6, 64, requires_grad=True)
    for energy in (GaussianBernoulliRBM(64, num_hidden=10), AutoencoderEnergy(64, code_dim=16)):
        f = energy(x)
        assert f.shape == (6,)
        (grad_x,) = torch.autograd.grad(f.sum(), x, create_graph=True)
        assert grad_x.shape == x.shape and torch.isfinite(grad_x).all()
        params = [p for p in energy.parameters()]
        grads = torch.autograd.grad(energy(x).mean(), params)
        assert all(torch.isfinite(g).all() for g in grads)
    assert AutoencoderEnergy(64, code_dim=16).features(x).shape == (6, 16)
    rbm = GaussianBernoulliRBM(64, num_hidden=10)
    with torch.no_grad():
        assert math.isfinite(rbm.log_partition().item())
    with pytest.raises(ValueError, match="num_hidden"):
        GaussianBernoulliRBM(64, num_hidden=32)


def test_rbm_fit_visible_to_data_gives_the_independent_gaussian():
    data = load_digits().train_images.reshape(-1, 64)
    rbm = GaussianBernoulliRBM(64, num_hidden=10)
    with torch.no_grad():
        rbm.weight.zero_()
        rbm.fit_visible_to(data)
        # With zero weights each hidden unit adds log 2 to -F(v) and to log Z, which cancel:
        # log p(v) is the independent Gaussian.
        expected = torch.distributions.Normal(data.mean(0), data.std(0).clamp_min(0.05)).log_prob(data[:5]).sum(-1)
        torch.testing.assert_close(rbm.log_prob(data[:5]), expected)


def test_frechet_distance_against_closed_forms():
    from pyro_stein.contrib.imaging.metrics import frechet_distance

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-8
    # N(0, I) against N(m, 4 I): |m|^2 + 3 (1 + 4 - 2 * 2) = |m|^2 + 3, up to sampling error.
    b = 2.0 * torch.randn(20000, 3, generator=generator, dtype=torch.float64) + torch.tensor([1.0, 0.0, -1.0])
    assert abs(frechet_distance(a, b) - 5.0) < 0.15


def test_inception_score_and_classifier_metrics():
    from pyro_stein.contrib.imaging.metrics import ClassifierMetrics, inception_score

    assert abs(inception_score(torch.eye(10).repeat(3, 1)) - 10.0) < 1e-6  # probabilities floored at 1e-12
    assert abs(inception_score(torch.eye(10)[[3] * 30]) - 1.0) < 1e-6
    assert abs(inception_score(torch.full((30, 10), 0.1)) - 1.0) < 1e-9
    data = load_digits()
    metrics = ClassifierMetrics.for_dataset(data)
    assert metrics.test_accuracy > 0.95
    held_out = metrics(data.test_images)
    assert held_out["classifier_frechet"] < 1e-6 and abs(held_out["diversity"] - 1.0) < 1e-9
    assert held_out["class_entropy"] > 0.99 * math.log(10)
    train = metrics(data.train_images)
    noise = metrics(torch.rand(500, 1, 8, 8))
    collapsed = metrics(data.test_images[:1].repeat(500, 1, 1, 1))
    # Real digits from the other split score far better than noise or one repeated digit.
    assert train["classifier_frechet"] < 0.1 * noise["classifier_frechet"]
    assert train["inception_score"] > 2 * noise["inception_score"] and train["inception_score"] > 8
    assert collapsed["diversity"] < 1e-6 and collapsed["class_entropy"] == 0.0
    assert held_out["coverage"] == 1.0 and train["coverage"] > 0.9
    assert collapsed["coverage"] < 0.05 and noise["coverage"] < 0.2
    # Deterministic: the same seed trains the same classifier.
    again = ClassifierMetrics.for_dataset(data)
    assert again(data.train_images) == train


def test_feature_stein_direction_reduces_to_and_pulls_back_the_stein_direction():
    from pyro_stein.contrib.steingan.training import feature_stein_direction
    from pyro_stein.ops.kernels import RBFKernel
    from pyro_stein.ops.stein import kernel_gram, stein_direction

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    scores = -x
    identity = feature_stein_direction(x, scores, lambda z: z, RBFKernel())
    torch.testing.assert_close(identity, stein_direction(scores, kernel_gram(x, RBFKernel())))
    # A linear feature map phi = x A^T: the repulsion is taken on phi and pulled back by A^T.
    a = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    direction = feature_stein_direction(x, scores, lambda z: z @ a.T, RBFKernel())
    gram = kernel_gram(x @ a.T, RBFKernel())
    repulsion = stein_direction(torch.zeros(40, 2, dtype=torch.float64), gram) @ a
    k = gram.profile.value
    drive = (k @ scores - k.diagonal().unsqueeze(-1) * scores) / 39
    torch.testing.assert_close(direction, drive + repulsion)


def test_short_steingan_run_lowers_the_classifier_frechet_distance():
    from pyro_stein.contrib.imaging.generator import Generator
    from pyro_stein.contrib.imaging.metrics import ClassifierMetrics
    from pyro_stein.contrib.steingan.training import SteinGAN

    data = load_digits()
    metrics = ClassifierMetrics.for_dataset(data)
    x = data.train_images.reshape(len(data.train_images), -1)
    torch.manual_seed(0)
    gan = SteinGAN(AutoencoderEnergy(64, code_dim=16), Generator(64))
    fixed = torch.Generator().manual_seed(1)
    before = metrics(gan.sample(1000, fixed).reshape(-1, 1, 8, 8))["classifier_frechet"]
    for _ in range(8):
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 99, 100):
            figures = gan.step(x[order[start : start + 100]])
    after = metrics(gan.sample(1000, fixed).reshape(-1, 1, 8, 8))["classifier_frechet"]
    assert math.isfinite(figures["stein_force"])
    # Measured: 283 at the start and 48 after 8 epochs (one thread).
    assert after < 0.3 * before, (before, after)


def test_command_line_run_writes_its_outputs_and_resumes(tmp_path, capsys):
    import json

    from pyro_stein.contrib.steingan.__main__ import main

    for energy in ("ae", "rbm"):
        out = tmp_path / energy
        assert main(["--energy", energy, "--epochs", "2", "--metrics-every", "1", "--out", str(out), "--no-progress"]) == 0
        for name in ("samples.png", "curves.png", "checkpoint.pt", "metrics.json"):
            assert (out / name).exists(), name
        report = json.loads((out / "metrics.json").read_text())
        assert report["history"]["epoch"] == [1, 2]
        for name in ("classifier_frechet", "inception_score", "class_entropy", "diversity", "coverage"):
            assert math.isfinite(report["final"][name])
        assert ("rbm_test_log_likelihood" in report["final"]) == (energy == "rbm")
    # Interrupted (Ctrl-C) as its third epoch starts, then resumed = 3 epochs straight through.
    import pyro_stein.contrib.imaging.training as training

    schedule = training.learning_rate_factor

    def interrupted_schedule(epoch, epochs):
        if epoch == 2:
            raise KeyboardInterrupt
        return schedule(epoch, epochs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "learning_rate_factor", interrupted_schedule)
        with pytest.raises(KeyboardInterrupt):
            main(["--epochs", "3", "--out", str(tmp_path / "cut"), "--no-progress"])
    assert main(["--epochs", "3", "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert main(["--epochs", "3", "--out", str(tmp_path / "straight"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert resumed["history"]["epoch"] == [1, 2, 3]
    assert resumed["history"]["data_energy"] == straight["history"]["data_energy"]
    assert resumed["final"]["classifier_frechet"] == straight["final"]["classifier_frechet"]
    capsys.readouterr()
    # A checkpoint resumes only its own run: not another energy, seed or length, and
    # metrics.json is left as it was.
    assert main(["--energy", "ae", "--epochs", "2", "--out", str(tmp_path / "rbm"), "--no-progress"]) == 2
    assert "energy: 'rbm' in the checkpoint's run, 'ae' in this one" in capsys.readouterr().err
    assert main(["--epochs", "3", "--seed", "1", "--out", str(tmp_path / "cut"), "--no-progress"]) == 2
    assert "seed: 0 in the checkpoint's run, 1 in this one" in capsys.readouterr().err
    assert main(["--epochs", "4", "--out", str(tmp_path / "cut"), "--no-progress"]) == 2
    assert "epochs: 3 in the checkpoint's run, 4 in this one" in capsys.readouterr().err
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["seed"] == 0
    assert main(["--dataset", str(tmp_path / "no_such_mnist"), "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "no MNIST data" in capsys.readouterr().err


def test_class_conditional_generator_draws_the_digit_it_is_asked_for():
    from pyro_stein.contrib.imaging.energies import ClassConditionalEnergy
    from pyro_stein.contrib.imaging.generator import Generator
    from pyro_stein.contrib.imaging.metrics import ClassifierMetrics
    from pyro_stein.contrib.imaging.training import train
    from pyro_stein.contrib.steingan.training import SteinGAN

    data = load_digits()
    metrics = ClassifierMetrics.for_dataset(data)
    torch.manual_seed(0)
    gan = SteinGAN(ClassConditionalEnergy(64, 10), Generator(64, num_classes=10))
    x = data.train_images.reshape(len(data.train_images), -1)
    history = train(gan, x, labels=data.train_labels, epochs=20, progress=False)
    asked = torch.arange(1000) % 10
    draws = gan.sample(1000, torch.Generator().manual_seed(0), labels=asked)
    accuracy = float((metrics.classifier(draws.reshape(-1, 1, 8, 8)).argmax(-1) == asked).float().mean())
    # Chance is 0.1; measured 0.50 after 20 epochs (0.61 after 30, about 0.77 after 100).
    assert accuracy > 0.3, accuracy
    assert len(history["stein_force"]) == 20
    with pytest.raises(ValueError, match="labels"):
        gan.step(x[:10])
    energy = ClassConditionalEnergy(64, 10, margin=0.2)
    images, labels = torch.rand(6, 64), torch.arange(6) % 10
    f = energy(images, labels)
    assert f.shape == (6,)
    # The hinge: the classifier term costs at least the margin, however confident.
    assert bool((f <= energy.autoencoder(images) - 0.2 + 1e-6).all())


def test_old_import_paths_and_command_line_still_work(capsys):
    """``pyro_stein.steingan`` and its submodules re-export the moved code, and its command
    line runs under its old name."""
    import importlib

    import pyro_stein.steingan as old
    from pyro_stein.contrib import imaging, steingan
    from pyro_stein.steingan.__main__ import main

    assert set(old.__all__) == set(steingan.__all__)
    assert all(getattr(old, name) is getattr(steingan, name) for name in old.__all__)
    moved = {"data": imaging.data, "energies": imaging.energies, "baselines": imaging.baselines,
             "metrics": imaging.metrics, "training": steingan.training, "experiment": steingan.experiment}
    for submodule, new in moved.items():
        module = importlib.import_module(f"pyro_stein.steingan.{submodule}")
        assert module.__all__ and all(hasattr(module, name) for name in module.__all__), submodule
        for name in set(module.__all__) & set(vars(new)):
            assert getattr(module, name) is getattr(new, name), (submodule, name)
    assert old.training.Generator is imaging.generator.Generator and old.training.train is imaging.training.train
    assert old.experiment.to_json is imaging.reports.to_json and old.experiment.report_run is imaging.cli.report_run
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m pyro_stein.steingan ")


def test_a_checkpoint_that_would_run_code_is_refused_by_the_command_line(tmp_path, capsys):
    import os

    from pyro_stein.contrib.steingan.__main__ import main

    marker = tmp_path / "executed"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"gan": RunsCode()}, out / "checkpoint.pt")
    assert main(["--energy", "rbm", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    assert "refused unread" in capsys.readouterr().err
    assert not marker.exists()
    (out / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert main(["--energy", "rbm", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


def test_bad_command_line_options_fail_before_any_work(tmp_path, capsys):
    from pyro_stein.contrib.steingan.__main__ import main

    afile = tmp_path / "afile"
    afile.write_text("")
    for options, message in ((["--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
                             (["--metrics-every", "0"], "--metrics-every: must be a positive integer"),
                             (["--out", str(afile)], "is a file, not a folder")):
        with pytest.raises(SystemExit) as exit_:
            main([*options, "--no-progress"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [afile]  # no output folder was made


def test_a_garbage_npz_is_named_without_numpys_pickle_advice(tmp_path):
    from pyro_stein.contrib.imaging.data import load_mnist

    (tmp_path / "mnist.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="mnist.npz: not a readable .npz file") as caught:
        load_mnist(tmp_path / "mnist.npz")
    assert "allow_pickle" not in str(caught.value)
    np.savez(tmp_path / "objects.npz", x_train=np.array([{}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros((1, 2, 2)), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="array 'x_train' holds Python objects"):
        load_mnist(tmp_path / "objects.npz")


def test_the_training_loop_refuses_a_checkpoint_of_other_data(tmp_path):
    from pyro_stein.contrib.imaging.baselines import GAN
    from pyro_stein.contrib.imaging.generator import Generator
    from pyro_stein.contrib.imaging.training import train

    def gan():
        torch.manual_seed(0)
        return GAN(Generator(16, noise_dim=4, hidden_dims=(8,)), 16, hidden_dims=(8,))

    path = tmp_path / "checkpoint.pt"
    first, second = torch.rand(2, 40, 16)
    train(gan(), first, epochs=2, batch_size=20, progress=False, checkpoint=path,
          fingerprint={"dataset": "a"})
    with pytest.raises(ValueError, match=r"belongs to another run.*data: tensor float32 \(40, 16\) sha256 \w+ in the checkpoint's run, tensor float32 \(40, 16\) sha256 \w+ in this one"):
        train(gan(), second, epochs=2, batch_size=20, progress=False, checkpoint=path,
              fingerprint={"dataset": "a"})
