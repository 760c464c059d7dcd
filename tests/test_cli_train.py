"""koala-sweep train: one configuration without Ray, as a user would run it."""

from __future__ import annotations

import json

import pytest

from koala_sweep.workloads.vision import DEBIAN_FASHION_MNIST

from .test_cli import _run


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist missing")
def test_koalapp_on_fashion_mnist_beats_chance_clearly():
    out = _run(
        "train",
        "--workload",
        "fashion_mnist_cnn",
        "--optimizer",
        "koalapp",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    epochs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[-1]["val_accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_table_output_and_hyperparameters_from_the_command_line():
    out = _run(
        "train",
        "--workload",
        "shakespeare_char_gpt",
        "--optimizer",
        "sgd",
        "--set",
        "lr=0.5",
        "--set",
        "momentum=0.9",
        "--set",
        "lr_schedule=step",
        "--set",
        "milestones=[1]",
        "--set",
        "gamma=0.5",
        "--arg",
        "max_chars=20000",
        "--arg",
        "context=16",
        "--arg",
        "d_model=32",
        "--arg",
        "n_layers=1",
        "--arg",
        "steps_per_epoch=2",
        "--arg",
        "val_batches=1",
        "--epochs",
        "2",
        "--device",
        "cpu",
    )
    assert out.returncode == 0, out.stderr
    header, first, second = out.stdout.splitlines()[:3]
    assert header.split()[:4] == ["epoch", "train_loss", "val_loss", "val_perplexity"]
    lr_col = header.split().index("lr")
    assert float(first.split()[lr_col]) == pytest.approx(0.25)  # decayed after epoch 1
    assert second.split()[0] == "2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "mnist", "--optimizer", "koalapp"], "unknown workload 'mnist'"),
        (["--workload", "fashion_mnist_cnn", "--optimizer", "lion"], "unknown optimizer 'lion'"),
        (
            ["--workload", "fashion_mnist_cnn", "--optimizer", "koalapp", "--set", "q=-1"],
            "hyperparameter 'q'",
        ),
        (
            ["--workload", "fashion_mnist_cnn", "--optimizer", "adam", "--set", "lr"],
            "--set expects key=value",
        ),
        (
            ["--workload", "fashion_mnist_cnn", "--optimizer", "adam", "--arg", "size=1"],
            "unknown argument 'size'",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, message):
    out = _run("train", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""
