"""scripts/final_study.py: a tuned study's best configurations become a valid study file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from koala_sweep.spec import Distribution, load_spec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic_study import fill  # noqa: E402


def test_final_study_fixes_each_arms_best_and_splits_the_variants(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    fill(url, "tuned", configurations=20, epochs=3)
    out = tmp_path / "final.yaml"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "final_study.py"),
            "tuned",
            "--storage",
            url,
            "--seeds",
            "0",
            "1",
            "2",
            "--split-variant",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    spec, _ = load_spec(out)
    assert spec.name == "tuned_final" and spec.seeds == [0, 1, 2]
    assert set(spec.arms) == {"koalapp_vanilla", "koalapp_symmetric", "adam", "sgd"}
    assert spec.arms["koalapp_vanilla"].params["variant"] == "vanilla"
    assert all(arm.budget == 1 for arm in spec.arms.values())
    assert not any(
        arm.has_grid or any(isinstance(v, Distribution) for v in arm.params.values())
        for arm in spec.arms.values()
    )  # every value fixed
