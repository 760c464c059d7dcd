"""Layouts: which panels a report and the live dashboard show, in which order, with which
titles and options. They live as YAML files in the top-level ``dashboards/`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PANEL_KINDS = (
    "summary",
    "tunability",
    "robustness",
    "sensitivity",
    "qr_map",
    "variants",
    "importance",
    "learning_curves",
    "time_to_target",
    "cost",
    "pruning",
)
DEFAULT_LAYOUT = Path(__file__).resolve().parents[2] / "dashboards" / "default.yaml"


class LayoutError(ValueError):
    """A layout file that cannot be used; the message names the file and the key path."""


class PanelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal[PANEL_KINDS]  # type: ignore[valid-type]
    title: str
    description: str = ""
    tolerance: float = Field(0.05, ge=0)
    tolerances: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25)
    max_distance: float = Field(0.1, ge=0)
    evaluators: tuple[Literal["ped_anova", "fanova"], ...] = ("ped_anova", "fanova")
    x: Literal["epoch", "seconds"] = "epoch"
    target: float | None = None


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str = "koala-sweep"
    panels: list[PanelSpec] = Field(min_length=1)


def load_layout(path: str | Path | None = None) -> Layout:
    path = Path(path) if path is not None else DEFAULT_LAYOUT
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LayoutError(f"{path}: cannot read the layout ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise LayoutError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: a layout is a mapping with 'title' and 'panels'")
    try:
        return Layout.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]).replace(
            ".[", "["
        )
        raise LayoutError(f"{path}: {where}: {first['msg']}") from None
