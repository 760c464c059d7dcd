"""Real training workloads and the one training loop every optimizer shares."""

from .base import MetricSpec, Task, Workload, WorkloadError
from .language import ShakespeareCharGPT, WikiText2GPT
from .vision import CIFAR_WORKLOADS, FashionMNISTCNN

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        FashionMNISTCNN(),
        *(cls() for cls in CIFAR_WORKLOADS),
        ShakespeareCharGPT(),
        WikiText2GPT(),
    )
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise WorkloadError(
            f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}"
        ) from None


__all__ = ["WORKLOADS", "MetricSpec", "Task", "Workload", "WorkloadError", "get_workload"]
