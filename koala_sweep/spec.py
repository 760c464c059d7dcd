"""Study files: the schema (pydantic), loading, and validation with errors that name the file,
the line and the key path (``studies/q_r.yaml:14: arms.koalapp.params.q: ...``).

A study compares arms (one optimizer each, with its search space) on one workload, each arm
tuned with the same sampler, pruner and budget. Parameter values in ``params`` are a constant or
one of ``{log_uniform: [lo, hi]}``, ``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``,
``{choice: [...]}``, ``{grid: [...]}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice", "grid")
SAMPLERS = ("tpe", "random", "qmc", "gp", "cmaes", "grid")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "wilcoxon", "none")


class SpecError(ValueError):
    """A study file that cannot be run; the message names file, line and key path."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """A searched hyperparameter: its kind and its range or values."""

    kind: Literal["log_uniform", "uniform", "int", "choice", "grid"]
    values: tuple[Any, ...]

    @property
    def low(self) -> Any:
        return self.values[0]

    @property
    def high(self) -> Any:
        return self.values[1]


def parse_param(value: Any) -> Any:
    """A constant, or a :class:`Distribution` for the one-key mappings above."""
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise ValueError(
            f"a searched value is one of {', '.join('{' + d + ': ...}' for d in DISTRIBUTIONS)}"
            f"; got {value!r}"
        )
    kind, values = next(iter(value.items()))
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind} needs a non-empty list")
    if kind in ("log_uniform", "uniform", "int"):
        if len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f"{kind} needs [lo, hi], two numbers")
        lo, hi = values
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{kind} needs finite bounds")
        if kind == "log_uniform" and not 0 < lo < hi:
            raise ValueError("log_uniform needs 0 < lo < hi")
        if kind == "uniform" and not lo < hi:
            raise ValueError("uniform needs lo < hi")
        if kind == "int" and (not all(isinstance(v, int) for v in values) or not lo < hi):
            raise ValueError("int needs integers lo < hi")
    if kind in ("choice", "grid") and len({repr(v) for v in values}) != len(values):
        raise ValueError(f"{kind} lists a value twice")
    return Distribution(kind=kind, values=tuple(values))


class SamplerSpec(_Strict):
    name: Literal["tpe", "random", "qmc", "gp", "cmaes", "grid"] = "tpe"
    seed: int | None = None


class PrunerSpec(BaseModel):
    """An Optuna pruner by name; other keys are its constructor's arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal["median", "percentile", "successive_halving", "hyperband", "wilcoxon", "none"]

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    # Host memory (GiB) a trial may allocate beyond what its worker held when it started:
    # reserved in Ray's scheduler and enforced in the worker (an allocation past it fails and
    # the trial is FAILED "out of memory" instead of taking the machine down).
    memory_gb: float | None = Field(None, gt=0)


class ArmSpec(_Strict):
    optimizer: str
    trials: int | None = Field(None, ge=1, description="configurations to try (the budget)")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("params must be a mapping of hyperparameter names to values")
        out = {}
        for key, value in v.items():
            try:
                out[key] = parse_param(value)
            except ValueError as err:
                # Re-raised with the key so that the error points at the parameter.
                raise ValueError(f"@{key}@{err}") from None
        return out

    def grid(self) -> dict[str, tuple[Any, ...]]:
        """The arm's grid axes (Tune's grid generator enumerates them, in koala_sweep.tune)."""
        return {
            k: d.values
            for k, d in self.params.items()
            if isinstance(d, Distribution) and d.kind == "grid"
        }

    @property
    def has_grid(self) -> bool:
        return any(isinstance(d, Distribution) and d.kind == "grid" for d in self.params.values())

    @property
    def budget(self) -> int:
        if self.has_grid:
            return math.prod(len(values) for values in self.grid().values())
        return int(self.trials or 0)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    workload: str
    workload_args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=1)
    metric: str
    direction: Literal["minimize", "maximize"]
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=lambda: PrunerSpec(name="median"))
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent_trials: int = Field(1, ge=1)
    retries: int = Field(0, ge=0, description="times a trial that raised is run again")
    arms: dict[str, ArmSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds are listed twice")
        return v


# ------------------------------------------------------------------------- line numbers


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line of that key (or list item) in the YAML text."""
    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                index[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return index


def _line_for(index: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    while path:
        if path in index:
            return index[path]
        path = path[:-1]
    return None


def line_of(text: str, path: tuple[str, ...]) -> int | None:
    """The line of ``path`` (a key path) in a study file's text, or of its nearest parent."""
    return _line_for(_line_index(text), path)


# ------------------------------------------------------------------------------ loading


def load_spec(path: str | Path, *, text: str | None = None) -> tuple[StudySpec, str]:
    """Parse and fully validate a study file; returns the spec and the file's text."""
    file = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(file, None, "", "no such file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(file, None, "", f"cannot read: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(
            file, mark.line + 1 if mark else None, "", f"not valid YAML: {problem}"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(file, 1, "", "a study file is a mapping (name:, workload:, arms:, ...)")
    lines = _line_index(text)

    def fail(path: tuple[str, ...], message: str) -> SpecError:
        return SpecError(file, _line_for(lines, path), ".".join(path), message)

    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        # A misspelt key also makes the right one "missing": name the misspelling first.
        errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = tuple(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if message.startswith("@"):  # a params entry: "@key@message"
            _, key, message = message.split("@", 2)
            loc = (*loc, key)
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "required key is missing"
        elif "input" in first and first["type"] not in ("value_error",):
            message = f"{message} (got {first['input']!r})"
        raise fail(loc, message) from None
    _check_semantics(spec, fail)
    return spec, text


def _check_semantics(spec: StudySpec, fail) -> None:
    """What the schema alone cannot know: names that must exist in the registries, values the
    optimizers accept, and a metric whose direction matches."""
    from .optim.registry import (
        HyperparameterError,
        UnknownOptimizerError,
        hyperparameter_names,
        validate_hyperparameters,
    )
    from .workloads import WORKLOADS, WorkloadError

    workload = WORKLOADS.get(spec.workload)
    if workload is None:
        raise fail(
            ("workload",),
            f"unknown workload {spec.workload!r}; choose one of {', '.join(WORKLOADS)}",
        )
    try:
        workload.parse_args(spec.workload_args)
    except WorkloadError as err:
        raise fail(("workload_args",), str(err)) from None
    try:
        metric = workload.metric(spec.metric)
    except WorkloadError as err:
        raise fail(("metric",), str(err)) from None
    if metric.direction != spec.direction:
        raise fail(
            ("direction",),
            f"{spec.metric} is to {metric.direction} ({metric.description})"
            f"; direction {spec.direction} would select the worst configurations",
        )

    if spec.sampler.name == "grid" and not any(a.has_grid for a in spec.arms.values()):
        raise fail(("sampler", "name"), "sampler grid needs {grid: [...]} values in the arms")
    try:
        build_pruner(spec)
    except (TypeError, ValueError) as err:
        raise fail(("pruner",), f"{spec.pruner.name}: {err}") from None

    for arm_name, arm in spec.arms.items():
        base = ("arms", arm_name)
        try:
            known = hyperparameter_names(arm.optimizer)
        except UnknownOptimizerError as err:
            raise fail((*base, "optimizer"), str(err)) from None
        if arm.has_grid and spec.sampler.name != "grid":
            raise fail((*base, "params"), "{grid: [...]} values need sampler: {name: grid}")
        if not arm.has_grid and spec.sampler.name == "grid":
            raise fail((*base, "params"), "sampler grid: every arm needs {grid: [...]} values")
        if arm.has_grid and arm.trials is not None and arm.trials != arm.budget:
            raise fail(
                (*base, "trials"),
                f"the grid has {arm.budget} points; trials must be {arm.budget} or left out",
            )
        if not arm.has_grid and arm.trials is None:
            raise fail((*base, "trials"), "required key is missing (the arm's budget)")
        for key in arm.params:
            if key not in known:
                raise fail(
                    (*base, "params", key),
                    f"not a hyperparameter of {arm.optimizer} (known: {', '.join(known)})",
                )
        # Every constant, bound and choice must be a value the optimizer accepts.
        constants = {k: v for k, v in arm.params.items() if not isinstance(v, Distribution)}
        probes = [constants]
        for key, value in arm.params.items():
            if isinstance(value, Distribution):
                probes += [{**constants, key: v} for v in value.values]
        for probe in probes:
            try:
                validate_hyperparameters(arm.optimizer, probe)
            except HyperparameterError as err:
                raise fail((*base, "params", err.key), err.message) from None


def build_pruner(spec: StudySpec):
    import optuna

    p = spec.pruner
    options = p.options
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "wilcoxon": optuna.pruners.WilcoxonPruner,
        "none": optuna.pruners.NopPruner,
    }
    if p.name == "hyperband":
        options.setdefault("max_resource", spec.epochs)
    return pruners[p.name](**options)


def build_sampler(spec: StudySpec):
    import optuna

    seed = spec.sampler.seed
    name = spec.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    # Grids are enumerated by Tune's grid generator and enqueued; the sampler only records.
    return optuna.samplers.RandomSampler(seed=seed)
