"""Flower ServerApp: config -> KnowledgeFusionStrategy -> results.json (+ config.toml).

The module-level ``app`` is `flwr run`'s front door: its config comes from the run_config, it
fails fast (one line) when fewer SuperNodes than num-clients connect, and a run without
``out-dir`` still lands in a folder (runs/<algorithm>-<dataset>-<time>, as `fedkd run` does).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.checkpoints import CHECKPOINTS, prepare_resume, start_fresh
from fedkd.config import ExperimentConfig
from fedkd.folder_lock import folder_lock
from fedkd.privacy import PrivacyLedger, noise_scale, release_rows
from fedkd.protocol import unprotected
from fedkd.results import (
    INTERRUPTED,
    RESULTS_FILE,
    RunResults,
    default_out_dir,
    prepare_out_dir,
    round_line,
    write_config_toml,
)
from fedkd.results_files import failure_reason
from fedkd.run_logs import RunLogs
from fedkd.run_plan import run_plan
from fedkd.validation import validate_config
from server.nodes import one_line_missing_nodes, wait_for_nodes
from server.progress import RoundProgress
from server.strategy import KnowledgeFusionStrategy

log = logging.getLogger("flwr.fedkd")


def run_federation(
    cfg: ExperimentConfig,
    grid: Grid,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    seeded_noise: bool = False,
    announce: bool = False,
    progress: str | None = None,
    default_out: bool = False,
) -> RunResults:
    """Drive all rounds on ``grid``; write results after each round when out-dir is set
    (``default_out``: a config without one writes to runs/<algorithm>-<dataset>-<time>).

    Too few nodes: MissingNodes after min-nodes-wait, before anything is written.
    ``resume``: the results.json of an interrupted run of this config; its rounds are kept and
    the run goes on from the next one, clients from their checkpoints (out-dir/checkpoints).
    ``seeded_noise``: the clients draw privacy noise from the run seed (fedkd's own simulations),
    recorded in the results so nobody mistakes it for a secret.
    ``announce``: log where the results go, at the start and at the end (`flwr run`: the log is
    all its user sees). ``progress``: how progress inside a round shows (server/progress.py;
    None: this process's setting). Logs (``log``: csv, tensorboard) get every round too."""
    validate_config(cfg)
    nodes = wait_for_nodes(grid, cfg.data.num_clients, cfg.run.min_nodes_wait)
    if default_out and not cfg.run.out_dir:  # reserved only once the nodes are there
        cfg = cfg.with_overrides({"out-dir": str(default_out_dir(cfg).resolve())})
    if not cfg.run.out_dir:
        return _run_owned(cfg, grid, nodes, on_round, resume, seeded_noise, announce, progress)
    with folder_lock(prepare_out_dir(cfg.run.out_dir)):  # the folder is this run's until it ends
        return _run_owned(cfg, grid, nodes, on_round, resume, seeded_noise, announce, progress)


def _run_owned(
    cfg: ExperimentConfig,
    grid: Grid,
    nodes: list[int],
    on_round: Callable[[dict[str, Any]], None] | None,
    resume: dict[str, Any] | None,
    seeded_noise: bool,
    announce: bool,
    progress: str | None,
) -> RunResults:
    path = Path(cfg.run.out_dir) / RESULTS_FILE if cfg.run.out_dir else None
    if announce and path is not None:
        log.info("results: %s", path)
    checkpoints = str(Path(cfg.run.out_dir) / CHECKPOINTS) if cfg.run.out_dir else ""
    if checkpoints and not (resume and resume["rounds"]):
        start_fresh(checkpoints, cfg)  # a fresh run never starts from old models
    elif checkpoints:
        prepare_resume(checkpoints, len(resume["rounds"]))  # drops a lost round's files
    if path is not None:
        write_config_toml(path.parent, cfg)
    done = list(resume["rounds"]) if resume else []
    results = RunResults(cfg, path, done, resume.get("final") if resume else None)
    results.payload["budget"] = run_plan(cfg).budget.as_record()  # the same for every algorithm
    logs = RunLogs.open(cfg, done)

    def record(rec: dict[str, Any]) -> None:
        results.append(rec)
        logs.write(rec)
        if on_round is not None:
            on_round(rec)
        else:
            log.info(round_line(rec, cfg.run.rounds))

    strategy = KnowledgeFusionStrategy(
        cfg,
        on_round=record,
        checkpoint_dir=checkpoints,
        start_round=len(done) + 1,
        progress=RoundProgress(progress),
    )
    if strategy.ledger is not None:  # epsilon already spent in the rounds kept
        for past in done:
            for pid in past["participants"]:
                strategy.ledger.record_release(int(pid))
    results.payload["environment"]["client_devices"] = strategy.client_devices  # filled by hello
    results.payload["hello_failed_clients"] = strategy.roster.hello_failed  # as failed_clients, by hello
    if strategy.ledger is not None:
        results.payload["privacy"] = privacy_record(cfg, strategy.ledger, seeded_noise)
    try:
        strategy.run(grid, nodes)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGINT/SIGTERM as fedkd.errors.Interrupted
        results.finish("interrupted", getattr(stop, "reason", INTERRUPTED), best_effort=True)
        raise
    except Exception as exc:
        results.finish("failed", failure_reason(exc), best_effort=True)
        raise
    finally:
        logs.close()
    if strategy.stopped:
        results.payload["stopped"] = strategy.stopped
        results.finish("stopped", strategy.stopped)
    else:
        results.finish("completed")
    if checkpoints:  # a finished run has nothing to resume: no model files left behind
        shutil.rmtree(checkpoints, ignore_errors=True)
    if announce and path is not None:
        log.info("results: %s", path)
    return results


def privacy_record(cfg: ExperimentConfig, ledger: PrivacyLedger, seeded_noise: bool) -> dict[str, Any]:
    """What results.json says of the run's privacy: mechanism, accounting, where noise comes
    from, what stays unprotected, and the noise actually applied."""
    return {
        "mechanism": cfg.privacy.mechanism,
        "accounting": ledger.method,
        "neighbouring_relation": f"replace-one ({cfg.privacy.sensitivity_model}-level)",
        "noise_source": "run seed (reproducible simulation: not secret from the server)"
        if seeded_noise
        else "OS secure random source, fresh per release",
        # a ledger exists only for prediction uploads, so no weights leave these clients
        "unprotected": {k: v for k, v in unprotected().items() if k != "weights"},
        "noise_scale": noise_scale(cfg.privacy, release_rows(cfg)),
        "effective_noise_multiplier": ledger.effective_multiplier()
        if cfg.privacy.mechanism == "gaussian"
        else None,
        "per_release_epsilon": ledger.per_release_epsilon() if cfg.privacy.mechanism == "laplace" else None,
    }


def make_server_app(
    bound: ExperimentConfig | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    sink: list[RunResults] | None = None,
    resume: dict[str, Any] | None = None,
    default_out: bool = False,
    progress: str | None = None,
) -> ServerApp:
    """A ServerApp; ``bound`` fixes the config (run_simulation passes no run_config).

    ``sink`` receives the RunResults object, for callers in the same process. ``default_out``:
    a config without out-dir writes to runs/<algorithm>-<dataset>-<time> in the working folder.
    ``progress``: how progress inside a round shows (server/progress.py; None: the process's).
    """
    app = ServerApp()
    one_line_missing_nodes()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = bound if bound is not None else ExperimentConfig.from_run_config(context.run_config)
        results = run_federation(
            cfg,
            grid,
            on_round,
            resume,
            announce=bound is None,
            seeded_noise=bound is not None,
            progress=progress,
            default_out=default_out,
        )
        if sink is not None:
            sink.append(results)

    return app


# Entry point for `flwr run`: config comes from the run_config; every run lands in a folder; its
# log (all a `flwr run --stream` user sees) says how long phases get on.
app = make_server_app(default_out=True, progress="lines")
