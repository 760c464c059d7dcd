"""Bad input and hostile input: every malformed study file through the real command line (exit
code 2, one located message, the store untouched), property-based tests of the study parser and
of the KOALA++ step, and the security promises."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from koala_sweep.cli import app
from koala_sweep.optim import KOALAPlusPlus
from koala_sweep.spec import SpecError, load_spec
from koala_sweep.store import open_store

from .test_spec import CASES, Q_R, _replace

ROOT = Path(__file__).resolve().parents[1]

# More cases the issue names, on top of the 35 located-error cases of test_spec.py.
EXTRA_CASES = [
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [1.0, 0.001]}"),
        "arms.koalapp.params.q",
    ),  # reversed range
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {uniform: [0.5, 0.5]}"),
        "arms.koalapp.params.q",
    ),  # empty range
    (
        _replace("q: {log_uniform: [0.001, 1.0]}", "q: {log_uniform: [0.0, 1.0]}"),
        "arms.koalapp.params.q",
    ),  # log range touching 0
    (_replace("optimizer: koalapp", "optimizer: lion"), "arms.koalapp.optimizer"),
    (
        _replace(
            "trials: 12\n    params:\n      lr: {log_uniform: [0.05",
            "trials: 0\n    params:\n      lr: {log_uniform: [0.05",
        ),
        "arms.koalapp.trials",
    ),
    (
        _replace(
            "params: {lr: {log_uniform: [0.0001, 0.03]}}",
            "params: {lr: {log_uniform: [0.0001, 0.03]}, q: 0.1}",
        ),
        "arms.adam.params",
    ),
    (_replace("cpu: 1, gpu: 0", "cpu: 1, gpu: -1"), "resources.gpu"),
    (_replace("cpu: 1, gpu: 0", "cpu: 1, gpu: 0, memory_gb: 0"), "resources.memory_gb"),
]
ALL_CASES = [(text, path) for text, _line, path, _words in CASES] + EXTRA_CASES


def _files(db: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db.parent.glob(db.name + "*"))
    }


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory):
    """A store that already holds a study: a malformed launch must leave it byte for byte."""
    db = tmp_path_factory.mktemp("store") / "store.db"
    store = open_store(f"sqlite:///{db}")
    store.writer.create_study(
        "kept",
        "name: kept\n",
        workload="w",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    store.dispose()
    return db


def test_the_malformed_corpus_is_large():
    assert len(ALL_CASES) >= 40


@pytest.mark.parametrize(
    ("text", "path"), ALL_CASES, ids=[f"case{i}" for i in range(len(ALL_CASES))]
)
def test_every_malformed_study_exits_2_with_one_located_message(
    text, path, tmp_path, existing_store
):
    study = tmp_path / "bad.yaml"
    study.write_text(text)
    before = _files(existing_store)
    result = CliRunner().invoke(
        app, ["launch", str(study), "--storage", f"sqlite:///{existing_store}"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one clear message
    message = lines[0]
    assert str(study) in message
    if path:
        assert re.search(re.escape(str(study)) + r"(:\d+)?: " + re.escape(path), message), message
    if "\n" in text.strip() and path:  # a key path in a file of several lines: its line too
        assert re.search(re.escape(str(study)) + r":\d+: ", message) or path in ("metric",), message
    assert _files(existing_store) == before  # the store is untouched


# ------------------------------------------------------------ property-based: the parser

BASE = yaml.safe_load(Q_R)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))


PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=values)
def test_parser_accepts_or_refuses_with_a_located_error(path, value):
    """Whatever value lands wherever in a valid study, the parser either accepts the file or
    raises SpecError naming the file: never another exception."""
    import copy

    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        load_spec("prop.yaml", text=text)
    except SpecError as err:
        assert str(err).startswith("prop.yaml"), str(err)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_parser_on_arbitrary_text(text):
    try:
        load_spec("any.yaml", text=text)
    except SpecError as err:
        assert str(err).startswith("any.yaml")


# ------------------------------------------------------- property-based: the KOALA++ step

shapes = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=3)
magnitudes = st.sampled_from([0.0, 1e-8, 1e-3, 1.0, 1e3, 1e8])


@settings(max_examples=60, deadline=None)
@given(
    shapes=shapes,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=magnitudes,
    loss=st.floats(0.0, 1e6),
    hp=st.fixed_dictionaries(
        {
            "lr": st.floats(1e-4, 10.0),
            "q": st.floats(0.0, 1.0),
            "variant": st.sampled_from(["vanilla", "symmetric"]),
            "weight_decay": st.sampled_from([0.0, 1e-3]),
        }
    ),
    seed=st.integers(0, 2**16),
)
# Found by this test: the x guard acting on tiny gradients once made the fast paths' symmetric
# step differ from the reference's by 2e-4 of the step.
@example(
    shapes=[[1], [4]],
    dtype=torch.float64,
    scale=1e-08,
    loss=1.0,
    hp={"lr": 2.0, "q": 1.0, "variant": "symmetric", "weight_decay": 0.0},
    seed=189,
)
def test_koalapp_step_with_guards_stays_finite_and_paths_agree(
    shapes, dtype, scale, loss, hp, seed
):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [
        [torch.randn(s, generator=gen, dtype=torch.float64) * scale for s in shapes]
        for _ in range(3)
    ]
    finals = []
    for foreach in (None, True, False):  # CPU path, multi-tensor path, single-tensor reference
        params = [p.clone().to(dtype).requires_grad_(False) for p in init]
        opt = KOALAPlusPlus(params, guards=True, foreach=foreach, **hp)
        for step in range(3):
            for p, g in zip(params, grads[step], strict=True):
                p.grad = g.to(dtype)
            opt.step(loss=loss * (1 + 0.1 * step), loss_var=(loss + 1.0) ** 2)
        assert all(torch.isfinite(p).all() for p in params), "guards on: finite in, finite out"
        finals.append(params)
    if scale >= 1e8:
        # sigma ||g||^2 / R ~ 1e15: on the first step 1 - lambda cancels to rounding noise (about
        # 1e-16 against 1e-15) in every implementation, the reference's included, so the paths'
        # trajectories agree only to that noise. Here the test holds finiteness, not agreement.
        return
    tol = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-9, 1e-12)}[dtype]
    for fast in finals[:2]:
        for a, b in zip(fast, finals[2], strict=True):
            atol = tol[1] * max(1.0, a.abs().max().item())
            torch.testing.assert_close(a, b, rtol=tol[0], atol=atol)


# ------------------------------------------------------------------------------ security


def test_yaml_tags_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(SpecError):
        load_spec("evil.yaml", text=text)
    assert not marker.exists()
    layout = tmp_path / "layout.yaml"
    layout.write_text(text)
    from koala_sweep.report import LayoutError, load_layout

    with pytest.raises(LayoutError):
        load_layout(layout)
    assert not marker.exists()


def test_hostile_names_are_data_not_sql(tmp_path):
    """Names go through bound parameters: a study named like an injection is stored as is and
    the tables survive it."""
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    evil = "x'); DROP TABLE koala_trial; --"
    sid = store.writer.create_study(
        evil,
        "name: x\n",
        workload="w",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    arm = store.writer.add_arm(
        sid, "a' OR '1'='1", optimizer="adam", search_space={}, budget=1, optuna_study_name="x/a"
    )
    store.writer.start_trial(arm, {"lr": "'; DELETE FROM koala_study; --"}, seed=0)
    assert store.study(evil)["name"] == evil
    trials = store.trials(evil)
    assert len(trials) == 1 and trials["lr"].iloc[0].startswith("';")


def test_no_pickle_and_no_string_built_sql_in_the_package():
    """Reading the store never unpickles, and SQL is never built by formatting strings."""
    offenders = []
    for path in (ROOT / "koala_sweep").rglob("*.py"):
        text = path.read_text()
        if re.search(r"\bpickle\.loads?\(|\bPickleType\b|torch\.load\(", text):
            if "workloads/vision.py" not in str(path):  # CIFAR's restricted unpickler
                offenders.append(f"{path}: unpickling")
        for m in re.finditer(r"(exec_driver_sql|text)\(\s*f[\"']", text):
            offenders.append(f"{path}: SQL from an f-string at {m.start()}")
    assert offenders == []


def test_ray_token_authentication_is_left_on():
    """The launcher never turns Ray's dashboard token off."""
    for path in (ROOT / "koala_sweep").rglob("*.py"):
        text = path.read_text()
        assert "RAY_AUTH_MODE" not in text or "disabled" not in text, path
