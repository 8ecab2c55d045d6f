"""Scale benchmark: many virtual clients on one machine, per engine, side by side in one run.

    python bench/scale.py --data-dir ../shared/data [--clients 10 100 1000 10000] [--rounds 3]

MNIST, small MLPs, KnFu, IID split (partition minimums lowered: at 10,000 clients a client holds
6 samples), 1 local + 1 distillation epoch. 10,000 registered clients sample ``fraction`` 0.01
(100 per round). Engines: ``plain`` (a bare loop over fedkd's client steps, one client at a
time, no Flower), ``inprocess`` (Flower ServerApp + ClientApp through the in-process Grid, clients
side by side on every core) and ``ray`` (Flower's Simulation Engine). Each configuration runs in
a fresh process. Per round (median of rounds 2..R): wall seconds, the clients' own compute
seconds (what their steps measured), wall / compute, peak resident memory of the whole process
tree (driver + Ray workers), bytes on the wire and the size of the results written.

Targets (issue: scale): at 100 clients inprocess <= 1.1x and ray <= 1.3x the clients' own
compute per round; 10,000 registered clients with 100 per round in <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import measure_in_fresh_process, run_driver  # noqa: E402 - bench/ is on the path

ENGINES = ("plain", "inprocess", "ray")


def scale_config(clients: int, rounds: int, data_dir: str, device: str):
    from fedkd.config import ExperimentConfig

    return ExperimentConfig().with_overrides(
        {
            "dataset": "mnist",
            "data-dir": data_dir,
            "num-clients": clients,
            "rounds": rounds,
            "models": "mlp",
            "partitioner": "iid",
            "min-partition-size": 2,
            "min-local-test-size": 1,
            "local-epochs": 1,
            "distill-epochs": 1,
            "transfer-size": 500,
            "fraction": 0.01 if clients >= 10_000 else 1.0,
            "device": device,
            "client-gpus": 0.1 if device == "cuda" else 0.0,
        }
    )


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_one(engine: str, clients: int, rounds: int, data_dir: str, device: str) -> dict:
    """Run one configuration in this process and return its figures."""
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    out = Path(tempfile.mkdtemp(prefix="fedkd-scale-"))
    cfg = scale_config(clients, rounds, data_dir, device).with_overrides(
        {
            "engine": "inprocess" if engine == "plain" else engine,
            "out-dir": "" if engine == "plain" else str(out),
        }
    )
    from fedkd.data.federation import federation

    federation(cfg.data, cfg.run.seed)  # data preparation is common to every engine: not timed
    ran = run_driver(engine, cfg)
    records = ran["records"]
    steady = records[1:] or records
    gpu_mb = 0.0
    if device == "cuda":
        import torch

        gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    return {
        "engine": engine,
        "clients": clients,
        "per_round": max(1, round(cfg.run.fraction * clients)),
        "round_s": statistics.median(r["wall_s"] for r in steady),
        "compute_s": statistics.median(r["compute_s"] for r in steady),
        "startup_s": ran["startup_s"],
        "peak_mb": ran["peak_mb"],
        "bytes_per_round": statistics.median(r["bytes_up"] + r["bytes_down"] for r in steady),
        "results_kb": _folder_bytes(out) / 1e3,
        "gpu_mb": gpu_mb,
    }


def table(rows: list[dict]) -> str:
    """The README table: one row per (clients, engine)."""
    lines = [
        "| clients (per round) | engine | round s | clients' compute s | wall / compute | x plain "
        "| start-up s | peak MB | kB on the wire / round | results kB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        plain = next((r for r in rows if r["clients"] == row["clients"] and r["engine"] == "plain"), None)
        vs_plain = f"{row['round_s'] / plain['round_s']:.2f}" if plain else "-"
        lines.append(
            f"| {row['clients']:,} ({row['per_round']:,}) | {row['engine']} | {row['round_s']:.2f} "
            f"| {row['compute_s']:.2f} | {row['round_s'] / row['compute_s']:.2f} | {vs_plain} "
            f"| {row['startup_s']:.1f} | {row['peak_mb']:,.0f} | {row['bytes_per_round'] / 1e3:,.0f} "
            f"| {row['results_kb']:,.0f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """The targets, each marked met or not from the rows measured."""
    out = []
    for engine, target in (("inprocess", 1.1), ("ray", 1.3)):
        row = next((r for r in rows if r["clients"] == 100 and r["engine"] == engine), None)
        if row:
            ratio = row["round_s"] / row["compute_s"]
            out.append(
                f"{engine} at 100 clients: {ratio:.2f}x compute (target <= {target}): "
                + ("met" if ratio <= target else "NOT met")
            )
    big = [r for r in rows if r["clients"] >= 10_000]
    for row in big:
        out.append(
            f"{row['engine']} at {row['clients']:,} clients: {row['peak_mb'] / 1024:.2f} GB "
            "(target <= 8 GB): " + ("met" if row["peak_mb"] <= 8 * 1024 else "NOT met")
        )
    for engine in ENGINES:
        small = next((r for r in rows if r["clients"] == 1000 and r["engine"] == engine), None)
        large = next((r for r in rows if r["clients"] == 10_000 and r["engine"] == engine), None)
        if small and large:
            per_client = (large["peak_mb"] - small["peak_mb"]) * 1024 / (large["clients"] - small["clients"])
            out.append(f"{engine}: about {per_client:.0f} kB more per registered (mostly idle) client")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000, 10_000])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", help="Also write the rows to this file.")
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = measure_one(args.one[0], int(args.one[1]), args.rounds, args.data_dir, args.device)
        print(json.dumps(row))
        return
    rows = []
    for clients in args.clients:
        for engine in args.engines:
            one = ["--one", engine, str(clients), "--rounds", str(args.rounds)]
            one += ["--data-dir", args.data_dir, "--device", args.device]
            rows.append(measure_in_fresh_process(__file__, one, f"{engine} with {clients} clients"))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"MNIST, knfu, mlp, {args.rounds} rounds, device {args.device}; per round = median of rounds 2..R")
    print(table(rows))
    print("\n".join(f"- {line}" for line in verdicts(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
