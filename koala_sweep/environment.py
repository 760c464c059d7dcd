"""What a study records about where it ran: package versions and compute devices."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = (
    "koala-sweep",
    "torch",
    "torchvision",
    "ray",
    "optuna",
    "pandas",
    "plotly",
    "sqlalchemy",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe_devices() -> str:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return "cuda: " + ", ".join(names)
    return f"cpu ({torch.get_num_threads()} threads)"


def describe_environment() -> dict[str, str]:
    env = {"python": platform.python_version(), **package_versions()}
    env["device"] = describe_devices()
    return env
