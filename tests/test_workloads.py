"""Every workload trains for real (tiny sizes), reads its data from the documented places, and
declares its metrics."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from koala_sweep.workloads import WORKLOADS, WorkloadError, get_workload
from koala_sweep.workloads.loop import run_trial
from koala_sweep.workloads.vision import DEBIAN_FASHION_MNIST, random_crop_flip

TINY_CIFAR = {"train_size": 32, "val_size": 16, "batch_size": 16, "download": False}
TINY_LM = {
    "context": 16,
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "batch_size": 4,
    "steps_per_epoch": 3,
    "val_batches": 2,
}


def write_tiny_cifar(root, classes: int, n_train: int = 40, n_test: int = 20) -> None:
    """A small file set in CIFAR's standard python layout (the same format torchvision
    downloads): pickled dicts with uint8 ``data`` rows and integer labels."""
    rng = np.random.default_rng(classes)
    label_key = b"labels" if classes == 10 else b"fine_labels"
    if classes == 10:
        folder, train_files, test_files = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
        )
    else:
        folder, train_files, test_files = "cifar-100-python", ["train"], ["test"]
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    per_file = max(n_train // len(train_files), 1)
    for names, n in ((train_files, per_file), (test_files, n_test)):
        for name in names:
            batch = {
                b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                label_key: rng.integers(0, classes, size=n).tolist(),
            }
            with open(base / name, "wb") as f:
                pickle.dump(batch, f, protocol=2)


def write_tiny_wikitext(root) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)] + ["the", "of", "<unk>"]
    d = root / "wikitext-2"
    d.mkdir(parents=True)
    for name, lines in (
        ("wiki.train.tokens", 200),
        ("wiki.valid.tokens", 40),
        ("wiki.test.tokens", 40),
    ):
        text = [" = Heading = "] + [" ".join(rng.choice(words, size=12)) for _ in range(lines)]
        (d / name).write_text("\n".join(text) + "\n", encoding="utf-8")


def _one_epoch(workload, args, optimizer="koalapp", hp=None):
    reports = list(
        run_trial(workload, optimizer, hp or {}, epochs=1, seed=0, workload_args=args, device="cpu")
    )
    assert len(reports) == 1
    return reports[0]


def test_every_workload_declares_metrics_with_directions():
    for w in WORKLOADS.values():
        names = {m.name for m in w.metrics}
        assert "val_loss" in names
        assert names & {"val_accuracy", "val_perplexity"}
        assert w.metric("val_loss").direction == "minimize"
        assert w.metric("train_loss").direction == "minimize"
        assert w.data_source and w.description
    assert get_workload("fashion_mnist_cnn").metric("val_accuracy").direction == "maximize"
    assert get_workload("wikitext2_gpt").metric("val_perplexity").direction == "minimize"
    with pytest.raises(WorkloadError, match="no metric"):
        get_workload("fashion_mnist_cnn").metric("val_perplexity")


def test_unknown_workload_and_argument_are_named():
    with pytest.raises(WorkloadError, match="fashion_mnist_cnn, cifar10_resnet18"):
        get_workload("mnist")
    with pytest.raises(WorkloadError, match="'train_sz'"):
        get_workload("fashion_mnist_cnn").parse_args({"train_sz": 10})
    with pytest.raises(WorkloadError, match="'batch_size'"):
        get_workload("fashion_mnist_cnn").parse_args({"batch_size": 0})


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist missing")
def test_fashion_mnist_trains_on_the_real_images():
    report = _one_epoch("fashion_mnist_cnn", {"train_size": 1024, "val_size": 512})
    m = report.metrics
    assert set(m) >= {
        "train_loss",
        "val_loss",
        "val_accuracy",
        "epoch_seconds",
        "step_seconds",
        "samples_per_second",
        "koala_s_min",
        "koala_r",
    }
    assert m["val_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert 0 < m["step_seconds"] < m["epoch_seconds"]


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist missing")
def test_fashion_mnist_from_a_given_root_in_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in DEBIAN_FASHION_MNIST.iterdir():
        os.symlink(f, raw / f.name)
    args = {"data_root": str(tmp_path), "train_size": 256, "val_size": 128, "download": False}
    assert _one_epoch("fashion_mnist_cnn", args).metrics["val_accuracy"] > 0.1


def test_fashion_mnist_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(WorkloadError, match="Fashion-MNIST not found in"):
        _one_epoch("fashion_mnist_cnn", {"data_root": str(tmp_path / "nothing"), "download": False})


@pytest.mark.parametrize(
    "name", ["cifar10_resnet18", "cifar100_resnet18", "cifar10_resnet50", "cifar100_resnet50"]
)
def test_cifar_workloads_train_from_files_in_the_standard_layout(tmp_path, name):
    classes = 10 if name.startswith("cifar10_") else 100
    write_tiny_cifar(tmp_path, classes)
    report = _one_epoch(
        name,
        {**TINY_CIFAR, "data_root": str(tmp_path)},
        optimizer="sgd",
        hp={"lr": 0.01, "momentum": 0.9},
    )
    assert math.isfinite(report.metrics["val_loss"])
    assert 0.0 <= report.metrics["val_accuracy"] <= 1.0
    model = (
        get_workload(name)
        .build(
            get_workload(name).parse_args({**TINY_CIFAR, "data_root": str(tmp_path)}),
            torch.device("cpu"),
            0,
        )
        .model
    )
    # The paper's CIFAR stem: a 3x3 stride-1 first convolution and no max-pool.
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.fc.out_features == classes


def test_cifar_missing_files_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(WorkloadError, match="CIFAR-10 not found"):
        _one_epoch("cifar10_resnet18", {**TINY_CIFAR, "data_root": str(tmp_path)})


def test_cifar_files_that_ask_for_code_are_refused(tmp_path):
    write_tiny_cifar(tmp_path, 10)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    get_workload("cifar10_resnet18")  # a fresh cache key below: another root
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        _one_epoch("cifar10_resnet18", {**TINY_CIFAR, "data_root": str(tmp_path)})


def test_random_crop_flip_shifts_and_flips_whole_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, gen, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(
            torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(2))
            for dy in range(5)
            for dx in range(5)
            for crop in [padded[i, :, dy : dy + 8, dx : dx + 8]]
        )
        assert found
    assert torch.equal(random_crop_flip(x, gen, pad=0).sort(-1).values, x.sort(-1).values)


def test_shakespeare_trains_and_reports_perplexity():
    report = _one_epoch("shakespeare_char_gpt", {**TINY_LM, "max_chars": 20000})
    m = report.metrics
    assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["val_loss"] < math.log(80)  # better than guessing among ~80 characters


def test_shakespeare_uses_the_complete_works():
    from koala_sweep.workloads.language import shakespeare_files, shakespeare_text

    assert len(shakespeare_files()) >= 40
    text = shakespeare_text()
    assert len(text) > 4_000_000 and "To be, or not to be" in text


def test_wikitext2_trains_from_files_in_the_standard_layout(tmp_path):
    write_tiny_wikitext(tmp_path)
    report = _one_epoch("wikitext2_gpt", {**TINY_LM, "data_root": str(tmp_path)})
    assert math.isfinite(report.metrics["val_perplexity"])
    assert report.metrics["val_perplexity"] < 60  # vocabulary of 45 words


def test_wikitext2_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(WorkloadError, match="wiki.train.tokens"):
        _one_epoch("wikitext2_gpt", {**TINY_LM, "data_root": str(tmp_path)})
