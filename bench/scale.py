"""Scale benchmark: many virtual clients on one machine, per engine, side by side in one run.

    python bench/scale.py --data-dir ../shared/data [--configs 10 100 1000 1000@0.1 10000@0.01]

MNIST, small MLPs, KnFu, IID split (partition minimums lowered; at 10,000 clients, 6 samples each,
two label-sorted shards per client so that each can hold out a test sample), 1 local + 1
distillation epoch. ``CLIENTS@FRACTION`` registers CLIENTS and asks that share each round. Engines:
``plain`` (a bare loop over fedkd's client steps and the round loop's exchange, one client at a
time, no messaging, no files), ``inprocess`` (Flower ServerApp + ClientApp through the in-process
Grid, clients side by side in one worker process per core, results and checkpoints written),
``inprocess-threads`` (the same with one worker thread per core), ``inprocess-offload`` (worker
processes, idle clients' state on disk; only when named in --engines) and ``ray`` (Flower's
Simulation Engine, the same files). Each configuration runs in a fresh process. Per round (median
of rounds 2..R): wall seconds; the clients' own compute, measured by the plain loop (one client at
a time, nothing competing); the ideal round for an engine that runs ``slots`` clients at once (own
compute / slots); wall / own compute; wall / ideal; peak memory of the whole process tree (driver +
worker processes + Ray; proportional set sizes, so pages that forked workers share with the driver
count once); clients per second; bytes on the wire; what was written.

Targets (issue: scale): at 100 clients inprocess <= 1.1x and ray <= 1.3x the clients' own
compute per round; 10,000 registered clients with 100 per round in <= 8 GB. Wall / ideal (how
close an engine comes to using every core) is reported beside them, stricter than the targets.
Memory per idle client: 10,000@0.01 against 1,000@0.1 (both 100 active per round).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import measure_in_fresh_process, run_driver  # noqa: E402 - bench/ is on the path

ENGINES = ("plain", "inprocess", "inprocess-threads", "inprocess-offload", "ray")
POOLS = {"inprocess": "processes", "inprocess-threads": "threads"}  # the in-process engine's workers
OFFLOADS = ("inprocess-offload",)  # idle clients' state on disk


def scale_config(
    clients: int, fraction: float, rounds: int, data_dir: str, device: str, client_gpus: float = 0.0
):
    from fedkd.config import ExperimentConfig

    return ExperimentConfig().with_overrides(
        {
            "dataset": "mnist",
            "data-dir": data_dir,
            "num-clients": clients,
            "rounds": rounds,
            "models": "mlp",
            # at 10,000 clients (6 samples each) an IID client holds single samples of six classes,
            # and a class never gives up its last sample to the test split: two label-sorted
            # shards of 3 samples each leave one to hold out
            "partitioner": "shard" if clients >= 10_000 else "iid",
            "min-partition-size": 2,
            "min-local-test-size": 1,
            "local-epochs": 1,
            "distill-epochs": 1,
            "transfer-size": 500,
            "fraction": fraction,
            "device": device,
            "client-gpus": client_gpus,  # Ray: the GPU share per virtual client (packing)
        }
    )


def per_round(clients: int, fraction: float, min_replies: int = 2) -> int:
    """Clients asked each round, as the strategy and the plain loop count them."""
    return min(clients, max(min_replies, math.ceil(fraction * clients)))


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_one(
    engine: str,
    clients: int,
    fraction: float,
    rounds: int,
    data_dir: str,
    device: str,
    client_gpus: float = 0.0,
) -> dict:
    """Run one configuration in this process and return its figures."""
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    out = Path(tempfile.mkdtemp(prefix="fedkd-scale-"))
    cfg = scale_config(clients, fraction, rounds, data_dir, device, client_gpus).with_overrides(
        {
            "engine": "ray" if engine == "ray" else "inprocess",
            "worker-pool": POOLS.get(engine, "processes"),
            "offload-idle": engine in OFFLOADS,
            "out-dir": "" if engine == "plain" else str(out),
        }
    )
    from fedkd.data.federation import federation

    federation(cfg.data, cfg.run.seed)  # data preparation is common to every engine: not timed
    ran = run_driver(engine, cfg)
    records = ran["records"]
    steady = records[1:] or records
    gpu_mb = 0.0
    if device == "cuda":  # this process's tensors only: Ray's actors hold theirs in other processes
        import torch

        gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    from experiments.engines import inprocess_workers

    slots = 1 if engine == "plain" else inprocess_workers(cfg.with_overrides({"workers": 0}))
    if engine == "ray" and client_gpus > 0:  # Ray starts no more actors than the GPU shares allow
        slots = min(slots, math.floor(1 / client_gpus))

    return {
        "engine": engine,
        "clients": clients,
        "fraction": fraction,
        "client_gpus": client_gpus,
        "per_round": per_round(clients, fraction, cfg.run.min_replies),
        # clients an engine runs at once: in-process workers, or Ray actors (one per free core,
        # and no more than the GPU shares allow)
        "slots": slots,
        "round_s": statistics.median(r["wall_s"] for r in steady),
        "compute_s": statistics.median(r["compute_s"] for r in steady),
        "startup_s": ran["startup_s"],
        "peak_mb": ran["peak_mb"],
        "bytes_per_round": statistics.median(r["bytes_up"] + r["bytes_down"] for r in steady),
        "results_kb": _folder_bytes(out) / 1e3,
        "gpu_mb": gpu_mb,
    }


def _same(a: dict, b: dict) -> bool:
    return a["clients"] == b["clients"] and a["fraction"] == b["fraction"]


def _own_compute(row: dict, rows: list[dict]) -> float:
    """The clients' own compute per round for ``row``'s configuration: the plain loop's (nan when
    it was not measured)."""
    plain = next((r for r in rows if _same(r, row) and r["engine"] == "plain"), None)
    return plain["compute_s"] if plain else float("nan")


def _ideal(row: dict, rows: list[dict]) -> float:
    """The round an engine with ``slots`` clients at once would need: own compute / slots."""
    return _own_compute(row, rows) / min(row["slots"], row["per_round"])


def table(rows: list[dict]) -> str:
    """The docs/scale.md table: one row per (configuration, engine)."""
    lines = [
        "| clients (per round) | engine | round s | clients' own compute s | x own compute | ideal s "
        "| x ideal | clients / s | start-up s | peak MB | kB on the wire / round | written kB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        own, ideal = _own_compute(row, rows), _ideal(row, rows)
        lines.append(
            f"| {row['clients']:,} ({row['per_round']:,}) | {row['engine']} | {row['round_s']:.2f} "
            f"| {own:.2f} | {row['round_s'] / own:.2f} | {ideal:.2f} "
            f"| {row['round_s'] / ideal:.2f} | {row['per_round'] / row['round_s']:.1f} "
            f"| {row['startup_s']:.1f} | {row['peak_mb']:,.0f} | {row['bytes_per_round'] / 1e3:,.0f} "
            f"| {row['results_kb']:,.0f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """The targets, each marked met or not from the rows measured."""
    out = []
    for engine, target in (("inprocess", 1.1), ("inprocess-threads", 1.1), ("ray", 1.3)):
        row = next((r for r in rows if r["clients"] == 100 and r["engine"] == engine), None)
        if row and math.isfinite(_own_compute(row, rows)):
            ratio, ideal = row["round_s"] / _own_compute(row, rows), _ideal(row, rows)
            out.append(
                f"{engine} at 100 clients: {ratio:.2f}x the clients' own compute (target <= {target}): "
                + ("met" if ratio <= target else "NOT met")
                + f"; {row['round_s'] / ideal:.2f}x the ideal round of {row['slots']} clients at once"
            )
    for row in (r for r in rows if r["clients"] >= 10_000):
        out.append(
            f"{row['engine']} at {row['clients']:,} registered clients ({row['per_round']} per round): "
            f"{row['peak_mb'] / 1024:.2f} GB (target <= 8 GB): "
            + ("met" if row["peak_mb"] <= 8 * 1024 else "NOT met")
        )
        smaller = [
            r
            for r in rows
            if r["engine"] == row["engine"]
            and r["clients"] < row["clients"]
            and r["per_round"] == row["per_round"]
        ]
        base = max(smaller, key=lambda r: r["clients"], default=None)  # 1,000@0.1 beside 10,000@0.01
        if base:
            per_client = (row["peak_mb"] - base["peak_mb"]) * 1024 / (row["clients"] - base["clients"])
            out.append(
                f"{row['engine']}: {per_client:.0f} kB per registered idle client "
                f"({row['clients']:,} vs {base['clients']:,} registered, {row['per_round']} active per round)"
            )
    return out


def _parse(config: str) -> tuple[int, float]:
    clients, _, fraction = config.partition("@")
    return int(clients), float(fraction or 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--configs", nargs="+", default=["10", "100", "1000", "1000@0.1", "10000@0.01"])
    default = [e for e in ENGINES if e not in OFFLOADS]
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=default)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--client-gpus",
        type=float,
        help="GPU share per Ray virtual client (packing: 0.1 = 10 per GPU) [default: 0.1 on cuda, else 0].",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], metavar="ENGINE:CONFIG", help="Leave these out (say why)."
    )
    parser.add_argument("--json", help="Also write the rows to this file.")
    parser.add_argument("--previous", help="JSON lines of rows measured before: those configs are not rerun.")
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_gpus is None:
        args.client_gpus = 0.1 if args.device == "cuda" else 0.0
    if args.one:
        clients, fraction = _parse(args.one[1])
        row = measure_one(
            args.one[0], clients, fraction, args.rounds, args.data_dir, args.device, args.client_gpus
        )
        print(json.dumps(row))
        return
    rows = []
    if args.previous:
        rows = [json.loads(line) for line in Path(args.previous).read_text().splitlines() if line.strip()]
        for row in rows:  # a label derived from the config, recomputed for rows of older runs
            row["per_round"] = per_round(row["clients"], row["fraction"])
    done = {(r["engine"], r["clients"], r["fraction"]) for r in rows}
    for config in args.configs:
        for engine in args.engines:
            if (engine, *_parse(config)) in done or f"{engine}:{config}" in args.skip:
                continue
            one = ["--one", engine, config, "--rounds", str(args.rounds)]
            one += [
                "--data-dir",
                args.data_dir,
                "--device",
                args.device,
                "--client-gpus",
                str(args.client_gpus),
            ]
            rows.append(measure_in_fresh_process(__file__, one, f"{engine} with {config} clients"))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        f"MNIST, knfu, mlp, {args.rounds} rounds, device {args.device}, client-gpus {args.client_gpus}; "
        "per round = median of rounds 2..R"
    )
    if args.device == "cuda":
        print(
            "GPU memory peak of the driver process (MB; Ray's actors are other processes): "
            + ", ".join(f"{r['engine']} {r['clients']}: {r['gpu_mb']:.0f}" for r in rows)
        )
    print(table(rows))
    print("\n".join(f"- {line}" for line in verdicts(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
