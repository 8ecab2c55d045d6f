"""Flower ServerApp: config -> KnowledgeFusionStrategy -> results.json."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.budget import compute_budget
from fedkd.config import ExperimentConfig, as_dict
from fedkd.privacy import noise_scale
from fedkd.results import RESULTS_FILE, RunResults, prepare_out_dir, round_line
from server.strategy import KnowledgeFusionStrategy

log = logging.getLogger("flwr.fedkd")


def run_federation(
    cfg: ExperimentConfig,
    grid: Grid,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> RunResults:
    """Drive all rounds on ``grid``; write results after each round when out-dir is set."""
    cfg.validate()
    path = prepare_out_dir(cfg.run.out_dir) / RESULTS_FILE if cfg.run.out_dir else None
    results = RunResults(as_dict(cfg), path)
    results.payload["budget"] = compute_budget(cfg).as_record()  # the same for every algorithm

    def record(rec: dict[str, Any]) -> None:
        results.append(rec)
        if on_round is not None:
            on_round(rec)
        else:
            log.info(round_line(rec, cfg.run.rounds))

    strategy = KnowledgeFusionStrategy(cfg, on_round=record)
    results.payload["environment"]["client_devices"] = strategy.client_devices  # filled by hello
    if strategy.ledger is not None:
        ledger = strategy.ledger
        results.payload["privacy"] = {
            "mechanism": cfg.privacy.mechanism,
            "accounting": ledger.method,
            "noise_scale": noise_scale(cfg.privacy, cfg.data.transfer_size),
            "effective_noise_multiplier": ledger.effective_multiplier()
            if cfg.privacy.mechanism == "gaussian"
            else None,
            "per_release_epsilon": ledger.per_release_epsilon()
            if cfg.privacy.mechanism == "laplace"
            else None,
        }
    try:
        strategy.run(grid)
    except KeyboardInterrupt:
        results.finish("interrupted", "interrupted by the user (Ctrl-C)")
        raise
    except Exception as exc:
        results.finish("failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])
        raise
    if strategy.stopped:
        results.payload["stopped"] = strategy.stopped
        results.finish("stopped", strategy.stopped)
    else:
        results.finish("completed")
    return results


def make_server_app(
    bound: ExperimentConfig | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    sink: list[RunResults] | None = None,
) -> ServerApp:
    """A ServerApp; ``bound`` fixes the config (run_simulation passes no run_config).

    ``sink`` receives the RunResults object, for callers in the same process.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = bound if bound is not None else ExperimentConfig.from_run_config(context.run_config)
        results = run_federation(cfg, grid, on_round)
        if sink is not None:
            sink.append(results)

    return app


# Entry point for `flwr run`: config comes from the run_config.
app = make_server_app()
