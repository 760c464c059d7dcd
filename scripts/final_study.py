"""Write the final-comparison study of a tuned study: each arm's best complete configuration,
fixed, to be trained again with more seeds on the same workload and budget of epochs.

    .venv/bin/python scripts/final_study.py shakespeare --storage sqlite:///runs/results.db \\
        --seeds 0 1 2 --split-variant -o studies/cpu_shakespeare_final.yaml

``--split-variant`` gives KOALA++ arms one final arm per variant (the best configuration of
each), so that the final comparison also answers which variant won.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koala_sweep.analysis import configurations  # noqa: E402
from koala_sweep.analysis.configurations import oriented, searched  # noqa: E402
from koala_sweep.store import open_store  # noqa: E402
from koala_sweep.store.reader import arms_frame  # noqa: E402


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def final_spec(store, study: str, seeds: list[int], split_variant: bool) -> dict:
    record = store.study(study)
    spec = yaml.safe_load(record["spec_yaml"])
    configs = configurations(store.trials(study))
    arms = arms_frame(store.engine, study)
    out_arms = {}
    for arm, optimizer, space in zip(
        arms["arm"], arms["optimizer"], arms["search_space"], strict=True
    ):
        complete = configs[(configs["arm"] == arm) & (configs["state"] == "COMPLETE")]
        groups = [(arm, complete)]
        if split_variant and "variant" in searched(space):
            groups = [(f"{arm}_{v}", g) for v, g in complete.groupby("variant")]
        for name, group in groups:
            if group.empty:
                continue
            best = group.iloc[int(oriented(group["value"], record["direction"]).argmin())]
            params = {k: _plain(best[k]) for k in space}
            out_arms[name] = {"optimizer": optimizer, "trials": 1, "params": params}
    spec.update(
        name=f"{study}_final",
        seeds=list(seeds),
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},
        arms=out_arms,
    )
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split-variant", action="store_true")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    store = open_store(args.storage, create=False)
    spec = final_spec(store, args.study, args.seeds, args.split_variant)
    header = (
        f"# The final comparison of study {args.study!r}: each arm's best complete "
        f"configuration,\n# trained again with seeds {args.seeds} (written by "
        "scripts/final_study.py).\n"
    )
    Path(args.output).write_text(header + yaml.safe_dump(spec, sort_keys=False))
    print(f"wrote {args.output}: arms {', '.join(spec['arms'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
