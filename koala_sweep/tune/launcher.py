"""`koala-sweep launch`: a study file becomes Optuna studies (one per arm) whose trials Ray Tune
runs, with everything written to the store by this process alone.

Resuming is running the same command again: configurations that finished are kept (once),
trials a dead launcher left RUNNING are marked FAILED (interrupted) in the store and in Optuna
and their budget is run again, so each arm ends with exactly its budget of finished
configurations.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..environment import describe_devices, package_versions
from ..spec import SpecError, StudySpec, build_pruner, build_sampler, line_of, load_spec
from ..store import Store, open_store
from .optuna_wiring import (
    INTERRUPTED,
    ArmSearcher,
    OptunaPruningScheduler,
    finished_configurations,
    grid_points,
)
from .store_callback import ArmProgress, StoreCallback

INTERRUPTED_MESSAGE = "interrupted: the launcher stopped before this trial finished"
# Read by Ray when it is imported: with it, a local Ray uses the loopback address for every
# service instead of the machine's external one.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class LaunchResult:
    study: str
    storage: str
    ray_dashboard_url: str | None


def _check_resources(spec: StudySpec, path: str, text: str, address: str | None) -> None:
    import torch

    if spec.resources.gpu > 0 and address is None and not torch.cuda.is_available():
        key = ("resources", "gpu")
        raise SpecError(
            path,
            line_of(text, key),
            ".".join(key),
            f"{spec.resources.gpu} GPU per trial asked for, but this machine has no CUDA device "
            "and no Ray cluster was given (--address)",
        )


def _start_ray(address: str | None, console: Console) -> tuple[bool, str | None]:
    """Start (or connect to) Ray unless this process already has it: (started, dashboard URL)."""
    import ray

    if ray.is_initialized():
        return False, None
    if address is None:
        # A local Ray on this machine only. Every service binds 127.0.0.1 only when Ray was
        # imported with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (see LOCAL_RAY_ENV), which the
        # command line sets before it imports this module.
        context = ray.init(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        context = ray.init(address=address, log_to_driver=False, configure_logging=False)
    url = context.dashboard_url
    if url and not url.startswith("http"):
        url = f"http://{url}"
    console.print(f"Ray dashboard: {url or 'not available'}")
    return True, url


def _mark_interrupted(store: Store, arm_id: int, study: optuna.Study) -> int:
    """Trials a dead launcher left running end as FAILED (interrupted), in the store and in
    Optuna; the study remembers their numbers so that they do not count against the budget."""
    marked = store.writer.fail_running_trials(arm_id, INTERRUPTED_MESSAGE)
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if stale:
        numbers = list(study.user_attrs.get(INTERRUPTED, []))
        for t in stale:
            study.tell(t.number, state=TrialState.FAIL)
            numbers.append(t.number)
        study.set_user_attr(INTERRUPTED, numbers)
    return marked


def _progress_table(spec: StudySpec, arms: dict[str, ArmProgress], started: float) -> Table:
    table = Table(title=f"study {spec.name}: {spec.workload}, {spec.metric} ({spec.direction})")
    for col in ("arm", "done / budget", "pruned", "diverged", "failed", "running", "best"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    remaining = 0
    durations: list[float] = []
    for p in arms.values():
        remaining += max(p.budget - p.finished, 0)
        durations += p.durations
        table.add_row(
            p.name,
            f"{p.finished} / {p.budget}",
            str(p.pruned),
            str(p.diverged),
            str(p.failed),
            str(p.running),
            "-" if p.best is None else f"{p.best:.4g}",
        )
    elapsed = time.monotonic() - started
    if durations:
        mean = sum(durations) / len(durations)
        left = remaining * mean / max(spec.max_concurrent_trials, 1)
        table.caption = f"elapsed {elapsed:.0f} s, about {left:.0f} s left"
    else:
        table.caption = f"elapsed {elapsed:.0f} s"
    return table


def launch(
    path: str,
    *,
    storage: str | None = None,
    address: str | None = None,
    console: Console | None = None,
    live: bool = True,
) -> LaunchResult:
    """Run (or resume) the study in ``path``. Bad input raises SpecError or StoreConflict
    before anything is written."""
    console = console or Console()
    spec, text = load_spec(path)
    _check_resources(spec, path, text, address)
    store = open_store(storage)
    writer = store.writer
    study_id = writer.create_study(
        spec.name,
        text,
        workload=spec.workload,
        metric=spec.metric,
        direction=spec.direction,
        package_versions=package_versions(),
        device=describe_devices(),
    )
    console.print(f"study {spec.name} in {store.masked_url}")
    started_ray, dashboard = _start_ray(address, console)
    try:
        if dashboard:
            writer.set_ray_dashboard_url(study_id, dashboard)
        _run_arms(spec, store, study_id, console, live)
    finally:
        if started_ray:
            # Stopped here rather than by Ray's exit hook, which first sleeps half a second
            # for log lines this launcher does not forward; a caller in the same process
            # (a notebook, a test) is also left without a Ray it did not start.
            import ray

            ray.shutdown()
    store.dispose()
    return LaunchResult(spec.name, store.masked_url, dashboard)


def _run_arms(spec: StudySpec, store: Store, study_id: int, console: Console, live: bool) -> None:
    """One Optuna study and one Tune run per arm, one arm after the other."""
    from ray import tune

    from .trainable import TrainConfiguration

    writer = store.writer
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_storage = store.optuna_storage()
    arms: dict[str, ArmProgress] = {}
    plans = []
    for name, arm in spec.arms.items():
        optuna_name = f"{spec.name}/{name}"
        arm_id = writer.add_arm(
            study_id,
            name,
            optimizer=arm.optimizer,
            search_space=_jsonable(arm.params),
            budget=arm.budget,
            optuna_study_name=optuna_name,
        )
        study = optuna.create_study(
            study_name=optuna_name,
            storage=optuna_storage,
            direction=spec.direction,
            sampler=build_sampler(spec),
            pruner=build_pruner(spec),
            load_if_exists=True,
        )
        interrupted = _mark_interrupted(store, arm_id, study)
        done = finished_configurations(study)
        if interrupted:
            console.print(
                f"arm {name}: {interrupted} interrupted trial(s) marked FAILED; "
                "their budget runs again"
            )
        arms[name] = ArmProgress(name, arm.budget, done_before=done)
        plans.append((name, arm, arm_id, study, arm.budget - done))

    # Tune's own console output (experiment boxes, result tables) would bury the live view:
    # its classic reporter with verbose=0 prints nothing.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    started = time.monotonic()
    ray_dir = Path("runs") / "ray"
    with Live(
        _progress_table(spec, arms, started),
        console=console,
        refresh_per_second=2,
        transient=False,
        auto_refresh=live,
    ) as view:

        def refresh() -> None:
            view.update(_progress_table(spec, arms, started))

        for name, arm, arm_id, study, remaining in plans:
            if remaining <= 0:
                continue
            base = {
                "workload": spec.workload,
                "workload_args": dict(spec.workload_args),
                "optimizer": arm.optimizer,
                "epochs": spec.epochs,
                "seeds": list(spec.seeds),
                "metric": spec.metric,
                "cpus": spec.resources.cpu,
                "gpus": spec.resources.gpu,
                "memory_gb": spec.resources.memory_gb,
            }
            grid = _grid_left(arm, study) if arm.has_grid else None
            searcher = ArmSearcher(
                study,
                arm,
                remaining=remaining,
                base_config=base,
                grid_points=grid,
                mode=spec.direction[:3],
            )
            callback = StoreCallback(
                writer,
                arm_id,
                arms[name],
                metric=spec.metric,
                direction=spec.direction,
                on_change=refresh,
            )
            callback.searcher = searcher
            tuner = tune.Tuner(
                tune.with_resources(TrainConfiguration, _trial_resources(spec)),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=OptunaPruningScheduler(searcher),
                    num_samples=-1,
                    max_concurrent_trials=spec.max_concurrent_trials,
                    # The next trial runs in the worker the last one used: PyTorch imported and
                    # the data loaded once per worker, not once per trial.
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=f"{spec.name}-{name}",
                    storage_path=str(ray_dir.resolve()),
                    callbacks=[callback],
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=spec.retries),
                    # No Tune checkpoints: a trial that fails starts over, and the store (not
                    # Tune's folder) is what a resumed study continues from.
                    checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                ),
            )
            tuner.fit()
            refresh()


def _grid_left(arm, study: optuna.Study) -> list[dict]:
    """The grid points this arm has not run yet (an interrupted trial's point runs again)."""
    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    axes = sorted(arm.grid())
    done = {
        tuple(t.params.get(k) for k in axes)
        for t in study.get_trials(deepcopy=False)
        if t.number not in interrupted
    }
    return [p for p in grid_points(arm) if tuple(p[k] for k in axes) not in done]


def _trial_resources(spec: StudySpec) -> dict[str, float]:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    if spec.resources.memory_gb is not None:
        resources["memory"] = spec.resources.memory_gb * 2**30  # Ray counts bytes
    return resources


def _jsonable(params: dict) -> dict:
    from ..spec import Distribution

    return {
        k: ({v.kind: list(v.values)} if isinstance(v, Distribution) else v)
        for k, v in params.items()
    }
