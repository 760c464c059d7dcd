"""Study files: the documented example is accepted as written; malformed files give one clear
message naming file, line and key path, exit code 2, and leave the store untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from koala_sweep.spec import SpecError, load_spec

from .test_cli import _run

ROOT = Path(__file__).resolve().parents[1]
Q_R = (ROOT / "studies" / "q_r.yaml").read_text()


def test_shipped_studies_are_valid():
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        spec, _ = load_spec(path)
        assert spec.arms and all(a.budget >= 1 for a in spec.arms.values())


def test_the_issue_example_is_accepted_exactly_as_written():
    spec, _ = load_spec("q_r.yaml", text=Q_R)
    assert spec.name == "q_r_demo" and spec.epochs == 4 and spec.seeds == [0]
    assert {a: arm.budget for a, arm in spec.arms.items()} == {"koalapp": 12, "adam": 12, "sgd": 12}
    q = spec.arms["koalapp"].params["q"]
    assert q.kind == "log_uniform" and q.values == (0.001, 1.0)
    assert spec.arms["koalapp"].params["sigma"] == 0.1
    assert spec.pruner.options == {"n_startup_trials": 3, "n_warmup_steps": 1}


def _replace(old: str, new: str) -> str:
    assert old in Q_R, old
    return Q_R.replace(old, new, 1)


CASES = [
    # (study text, line, key path, words of the message)
    ("name: [unclosed\n", 2, "", "not valid YAML"),
    ("- just\n- a list\n", 1, "", "mapping"),
    (_replace("epochs: 4 ", "epoch: 4 "), 6, "epoch", "unknown key"),
    (_replace("epochs: 4 ", "epochs: four "), 6, "epochs", "integer"),
    (_replace("epochs: 4 ", "epochs: 0 "), 6, "epochs", "greater than or equal to 1"),
    (_replace("metric: val_loss\n", ""), None, "metric", "missing"),
    (_replace("metric: val_loss", "metric: val_perplexity"), 7, "metric", "no metric"),
    (_replace("direction: minimize", "direction: maximize"), 8, "direction", "worst"),
    (_replace("direction: minimize", "direction: down"), 8, "direction", "minimize"),
    (_replace("workload: fashion_mnist_cnn", "workload: mnist"), 4, "workload", "unknown workload"),
    (_replace("train_size: 10000", "train_sz: 10000"), 5, "workload_args", "train_sz"),
    (_replace("seeds: [0]", "seeds: []"), 9, "seeds", "at least 1"),
    (_replace("seeds: [0]", "seeds: [1, 1]"), 9, "seeds", "twice"),
    (_replace("name: tpe", "name: bayes"), 10, "sampler.name", "tpe"),
    (_replace("name: median", "name: asha"), 11, "pruner.name", "median"),
    (_replace("n_warmup_steps: 1", "n_warmup_stepz: 1"), 11, "pruner", "n_warmup_stepz"),
    (_replace("cpu: 1, gpu: 0", "cpu: 0, gpu: 0"), 12, "resources.cpu", "greater than 0"),
    (
        _replace("max_concurrent_trials: 2", "max_concurrent_trials: -1"),
        13,
        "max_concurrent_trials",
        "greater than or equal to 1",
    ),
    (
        _replace("optimizer: koalapp", "optimizer: lion"),
        16,
        "arms.koalapp.optimizer",
        "unknown optimizer",
    ),
    (_replace("trials: 12", "trials: 0"), 17, "arms.koalapp.trials", "greater than or equal"),
    (_replace("    trials: 12\n", ""), 15, "arms.koalapp.trials", "missing"),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [0, 1.0]}"),
        20,
        "arms.koalapp.params.q",
        "log_uniform needs 0 < lo < hi",
    ),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [1.0, 0.001]}"),
        20,
        "arms.koalapp.params.q",
        "0 < lo < hi",
    ),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {uniform: [0.5, 0.5]}"),
        20,
        "arms.koalapp.params.q",
        "lo < hi",
    ),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {normal: [0, 1]}"),
        20,
        "arms.koalapp.params.q",
        "searched value",
    ),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [0.001]}"),
        20,
        "arms.koalapp.params.q",
        "[lo, hi]",
    ),
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {uniform: [-1.0, 1.0]}"),
        20,
        "arms.koalapp.params.q",
        "greater than or equal to 0 (got -1.0)",
    ),
    (
        _replace("variant: {choice: [vanilla, symmetric]}", "variant: {choice: []}"),
        22,
        "arms.koalapp.params.variant",
        "non-empty",
    ),
    (
        _replace("variant: {choice: [vanilla, symmetric]}", "variant: {choice: [vanilla, diag]}"),
        22,
        "arms.koalapp.params.variant",
        "diag",
    ),
    (
        _replace("sigma: 0.1", "sigma: -0.1"),
        23,
        "arms.koalapp.params.sigma",
        "greater than or equal to 0",
    ),
    (
        _replace("momentum: 0.9", "momentum: 0.9, q: 0.1"),
        32,
        "arms.sgd.params.q",
        "not a hyperparameter of sgd",
    ),
    (
        _replace("params: {lr: {log_uniform: [0.0001, 0.03]}}", "params: {lr: 0}"),
        28,
        "arms.adam.params.lr",
        "greater than 0",
    ),
    (
        _replace("lr: {log_uniform: [0.05, 4.0]}", "lr: {grid: [0.5, 1.0]}"),
        18,
        "arms.koalapp.params",
        "sampler: {name: grid}",
    ),
    (_replace("name: q_r_demo", "name: q r demo"), 3, "name", "pattern"),
    (_replace("arms:\n", "arms: {}\nold_arms:\n"), 15, "old_arms", "unknown key"),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "words"), CASES, ids=[f"case{i}" for i in range(len(CASES))]
)
def test_malformed_study_files_are_located(text, line, path, words):
    with pytest.raises(SpecError) as err:
        load_spec("bad.yaml", text=text)
    e = err.value
    assert e.file == "bad.yaml" and e.path == path, str(e)
    assert e.line == line, str(e)
    assert words in str(e), str(e)
    prefix = f"bad.yaml:{line}: " if line else "bad.yaml: "
    assert str(e).startswith(prefix + (f"{path}: " if path else ""))


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_a_gpu_study_without_a_gpu_or_cluster_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "gpu.yaml"
    path.write_text(_replace("cpu: 1, gpu: 0", "cpu: 1, gpu: 0.25"))
    db = tmp_path / "store.db"
    out = _run("launch", str(path), "--storage", f"sqlite:///{db}")
    assert out.returncode == 2
    assert f"{path}:12: resources.gpu" in out.stderr and "no CUDA device" in out.stderr
    assert not db.exists()  # nothing was written


def test_launch_with_a_malformed_file_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(_replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [0, 1.0]}"))
    db = tmp_path / "store.db"
    out = _run("launch", str(path), "--storage", f"sqlite:///{db}")
    assert out.returncode == 2
    assert out.stderr.strip().endswith("arms.koalapp.params.q: log_uniform needs 0 < lo < hi") or (
        f"{path}:20: arms.koalapp.params.q: log_uniform needs 0 < lo < hi" in out.stderr
    )
    assert not db.exists()
    missing = _run("launch", str(tmp_path / "nope.yaml"), "--storage", f"sqlite:///{db}")
    assert missing.returncode == 2 and "no such file" in missing.stderr
