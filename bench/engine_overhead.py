"""Engine overhead benchmark: the same experiment on three drivers, side by side in one run.

    python bench/engine_overhead.py [--clients 10 100] [--rounds 5]

Drivers: ``plain`` (a bare Python loop over fedkd's client steps and the round loop's exchange, no messaging),
``inprocess`` (ServerApp + ClientApp through the in-process Grid) and ``ray`` (Flower's
Simulation Engine). Each runs in a fresh subprocess; reported per driver: per-round seconds
(median of rounds 2..R), start-up seconds (until round 1 begins), round 1 seconds (Ray
workers warm up there), peak memory of the process tree (driver + Ray workers; proportional set
sizes, sampled every second) and ratios to the plain loop.
Targets: inprocess <= 1.1x and ray <= 1.5x the plain loop per round at 100 clients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import measure_in_fresh_process, run_driver  # noqa: E402 - bench/ is on the path


def bench_config(clients: int, rounds: int):
    from fedkd.config import ExperimentConfig

    return ExperimentConfig().with_overrides(
        # digits has ~12 samples per client at 100 clients: tiny partitions and test splits are
        # fine for timing the engines (this bench measures overhead, not accuracy)
        {
            "num-clients": clients,
            "rounds": rounds,
            "partitioner": "iid" if clients > 50 else "dirichlet",
            "min-local-test-size": 1,
        }
    )


def measure_one(driver: str, clients: int, rounds: int) -> dict:
    """Run one driver in this process and return its figures."""
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    cfg = bench_config(clients, rounds).with_overrides(
        # one client at a time, like the plain loop: this bench measures messaging overhead
        {"engine": "inprocess" if driver == "plain" else driver, "workers": 1}
    )
    from fedkd.data.federation import federation

    federation(cfg.data, cfg.run.seed)  # data preparation is common to all drivers: not timed
    ran = run_driver(driver, cfg)
    walls = [r["wall_s"] for r in ran["records"]]
    return {
        "driver": driver,
        "clients": clients,
        "round_s": statistics.median(walls[1:]) if len(walls) > 1 else walls[0],
        "startup_s": ran["startup_s"],
        "round1_s": walls[0],
        "total_s": ran["total_s"],
        "peak_mb": ran["peak_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drivers", nargs="+", default=["plain", "inprocess", "ray"])
    parser.add_argument("--one", nargs=2, metavar=("DRIVER", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.rounds)))
        return
    rows = []
    for clients in args.clients:
        for driver in args.drivers:
            one = ["--one", driver, str(clients), "--rounds", str(args.rounds)]
            rows.append(measure_in_fresh_process(__file__, one, f"{driver} with {clients} clients"))
    print(f"digits, knfu, {args.rounds} rounds; per-round = median of rounds 2..{args.rounds}")
    print(
        f"{'clients':>7} {'driver':>10} {'round s':>8} {'x plain':>8} {'startup s':>10} {'round 1 s':>10}"
        f" {'peak MB':>8}"
    )
    for row in rows:
        plain = next(r for r in rows if r["clients"] == row["clients"] and r["driver"] == "plain")
        ratio = row["round_s"] / plain["round_s"]
        print(
            f"{row['clients']:>7} {row['driver']:>10} {row['round_s']:>8.3f} {ratio:>8.2f}"
            f" {row['startup_s']:>10.2f} {row['round1_s']:>10.2f} {row['peak_mb']:>8.0f}"
        )


if __name__ == "__main__":
    main()
