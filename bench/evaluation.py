"""Evaluation cost benchmark: how much of a round is evaluation, before and after cheap evaluation.

    python bench/evaluation.py [--data-dir ../shared/data] [--rounds 3]

Workload (the trust issue's): MNIST, 10 clients, 100 private samples each, algorithm local,
in-process engine. Settings, each in a fresh subprocess, side by side in one invocation:
``whole-test-set`` (every client scores all 10,000 test images every round: the old default,
global-test-size = 0), ``defaults`` (a fixed 500-image global test subset, every round) and
``eval-every-5`` (that subset, evaluated in rounds 5, 10, ... and always the last). Reported per
setting: seconds per round (mean over rounds), seconds inside evaluation (local + global
accuracy, timed around fedkd's accuracy function), evaluation share of the round, and final
ALMA, which must not change (ALMA uses the local test splits only).
Target: evaluation <= 25% of a round with default settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import measure_in_fresh_process  # noqa: E402 - bench/ is on the path

SETTINGS = {"whole-test-set": {"global-test-size": 0}, "defaults": {}, "eval-every-5": {"eval-every": 5}}


def measure_one(setting: str, data_dir: str, rounds: int) -> dict:
    import logging

    import fedkd.client_steps as steps
    from experiments.engines import run_experiment
    from fedkd.config import ExperimentConfig
    from fedkd.data.federation import federation

    logging.getLogger("flwr").setLevel(logging.ERROR)
    cfg = ExperimentConfig().with_overrides(
        {
            "dataset": "mnist",
            "data-dir": data_dir,
            "num-clients": 10,
            "max-client-samples": 100,
            "algorithm": "local",
            "engine": "inprocess",
            "rounds": rounds,
            **SETTINGS[setting],
        }
    )
    federation(cfg.data, cfg.run.seed)  # data preparation is common to all settings: not timed
    spent = [0.0]
    timed = steps.accuracy

    def accuracy(*args, **kwargs):
        start = time.perf_counter()
        try:
            return timed(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    steps.accuracy = accuracy
    walls: list[float] = []
    results = run_experiment(cfg, lambda record: walls.append(record["wall_s"]))
    return {
        "setting": setting,
        "round_s": sum(walls) / rounds,
        "eval_s": spent[0] / rounds,
        "share": spent[0] / sum(walls),
        "alma": results.payload["final"]["alma"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("FEDKD_DATA_DIR", str(ROOT.parent / "shared/data"))
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.data_dir, args.rounds)))
        return
    rows = []
    for setting in SETTINGS:
        one = ["--one", setting, "--data-dir", args.data_dir, "--rounds", str(args.rounds)]
        rows.append(measure_in_fresh_process(__file__, one, setting))
    print(f"MNIST, 10 clients x 100 private samples, local, in-process, {args.rounds} rounds")
    header = ("setting", "round s", "eval s/round", "eval share", "x round", "final ALMA")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (15, 8, 13, 11, 8, 11), strict=True)))
    base = rows[0]["round_s"]
    for row in rows:
        print(
            f"{row['setting']:>15} {row['round_s']:>8.3f} {row['eval_s']:>13.3f} {row['share']:>10.1%}"
            f" {row['round_s'] / base:>8.2f} {row['alma']:>11.4f}"
        )


if __name__ == "__main__":
    main()
