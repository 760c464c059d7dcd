"""Sensitivity, importance, tunability and robustness of a study: pure functions on the
store's tidy frames (no I/O), used by the report and the live dashboard alike."""

from .configurations import best_configurations, configurations
from .cost import cost
from .curves import best_learning_curves, configuration_curves, time_to_target
from .headline import equal_budget, headline, verdict
from .importance import importance
from .pruning import pruning_savings
from .robustness import robustness
from .sensitivity import best_regions, qr_map, sensitivity, variant_pairs
from .tunability import tunability

__all__ = [
    "best_configurations",
    "best_learning_curves",
    "best_regions",
    "configuration_curves",
    "configurations",
    "cost",
    "equal_budget",
    "headline",
    "importance",
    "pruning_savings",
    "qr_map",
    "robustness",
    "sensitivity",
    "time_to_target",
    "tunability",
    "variant_pairs",
    "verdict",
]
