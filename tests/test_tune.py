"""fedkd tune: the same trials per method on validation ALMA only, seeded and resumable, and the
tuned.toml it writes feeding sweeps. Runs are faked where only the scoring is under test (a fake
writes what a run writes: val_alma a fixed function of the settings, test metrics random)."""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.sweep import PlannedRun, Sweep, execute, expand, load_sweep, read_rows
from experiments.tune import TRIALS_FILE, TUNED_FILE, plan_studies, run_studies, tune_seeds, write_outputs
from experiments.tune_space import DEFAULT_TRIALS, SHARED, SPACES, keys_of, render_markdown, space_of, suggest
from experiments.tuned import load_tuned
from fedkd.config import ConfigError, ExperimentConfig, config_keys
from fedkd.csv_cells import cell
from fedkd.fusion import FUSIONS
from fedkd.results import RESULTS_FILE, RunResults
from fedkd.results_files import load_results, write_rounds

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "dataset": "digits",
    "engine": "inprocess",
    "num-clients": 3,
    "rounds": 1,
    "local-epochs": 2,
    "revisit-epochs": 1,
    "distill-epochs": 1,
    "transfer-size": 60,
    "max-client-samples": 40,
    "workers": 1,
}
TEST_KEYS = ("alma", "global_acc", "alma_matched")


def fake_score(flat: dict) -> float:
    """A validation ALMA with one best setting: learning rate 0.003, temperature 4, 2 local epochs."""
    score = 0.8 - 0.05 * math.log(flat["learning-rate"] / 0.003) ** 2 - 0.002 * (flat["temperature"] - 4) ** 2
    return score - 0.01 * abs(flat["local-epochs"] - 2) + 0.001 * (flat["seed"] % 7)


def fake_run(run: PlannedRun, out_dir: str, scramble: int = 0) -> dict:
    """Writes a one-round results.json like a real run: val_alma from ``fake_score``, every test
    metric drawn at random from ``scramble``."""
    folder = Path(out_dir) / "runs" / run.run_id
    cfg = run.config.with_overrides({"out-dir": str(folder)})
    rng = np.random.default_rng([scramble, int(run.run_id, 16) % 2**32])
    test = {key: float(rng.random()) for key in TEST_KEYS}
    results = RunResults(cfg, folder / RESULTS_FILE)
    results.append({"round": 1, "evaluated": True, "val_alma": fake_score(cfg.to_run_config()), **test})
    results.finish("completed")
    final = results.payload["final"]
    return {
        "id": run.run_id,
        "axes": run.axes,
        "status": "ok",
        "final": final,
        "results": f"runs/{run.run_id}/{RESULTS_FILE}",
    }


def tune_into(
    out: Path, sweep: Sweep, trials: int, run, algorithms=None, workers: int = 1, n_seeds=1
) -> list:
    seeds = tune_seeds(n_seeds)
    studies = plan_studies(sweep, {}, algorithms, seeds)
    list(run_studies(studies, out, trials, seeds, workers, run))
    assert write_outputs(studies, out, trials, seeds) == []
    return studies


def trials_table(out: Path) -> list[dict]:
    with open(out / TRIALS_FILE) as handle:
        return list(csv.DictReader(handle))


GRID = Sweep("t", TINY, {"alpha": [0.3, 3.0], "seed": [0, 1], "algorithm": ["local", "knfu"]}, {})


def test_choices_never_read_test_metrics(tmp_path):
    """Scrambling alma, global_acc and alma_matched changes nothing tune chooses or records."""
    tune_into(tmp_path / "a", GRID, 4, partial(fake_run, scramble=1))
    tune_into(tmp_path / "b", GRID, 4, partial(fake_run, scramble=2))
    first = [row["final"]["alma"] for row in read_rows(tmp_path / "a" / "runs.jsonl")]
    second = [row["final"]["alma"] for row in read_rows(tmp_path / "b" / "runs.jsonl")]
    assert first != second  # the scrambling reached what the runs record
    assert (tmp_path / "a" / TUNED_FILE).read_text() == (tmp_path / "b" / TUNED_FILE).read_text()
    assert trials_table(tmp_path / "a") == trials_table(tmp_path / "b")
    tuned = load_tuned(tmp_path / "a" / TUNED_FILE)
    table = trials_table(tmp_path / "a")
    for entry in tuned.entries:  # the best trial by val_alma is the one chosen
        cell = " ".join(f"{k}={v}" for k, v in entry.cell.items())
        scores = [
            float(r["val_alma"]) for r in table if (r["algorithm"], r["cell"]) == (entry.algorithm, cell)
        ]
        assert entry.val_alma == pytest.approx(max(scores), rel=1e-11)  # the CSV: 12 significant digits


def test_every_method_and_cell_gets_the_same_trials_on_tuning_seeds(tmp_path):
    studies = tune_into(tmp_path, GRID, 3, fake_run)
    assert sorted(s.name for s in studies) == [
        "knfu alpha=0.3",
        "knfu alpha=3.0",
        "local alpha=0.3",
        "local alpha=3.0",
    ]
    table = trials_table(tmp_path)
    for study in studies:
        cell = " ".join(f"{k}={v}" for k, v in study.cell.items())
        rows = [r for r in table if (r["algorithm"], r["cell"]) == (study.algorithm, cell)]
        assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"complete"}
    runs = read_rows(tmp_path / "runs.jsonl")
    assert len(runs) == 12 and {r["axes"]["seed"] for r in runs} == {1000}  # never seed 0 or 1
    assert {r["axes"]["algorithm"] for r in runs} == {"local", "knfu"}
    knfu = [r for r in table if r["algorithm"] == "knfu"]
    assert all(r["beta"] and r["temperature"] for r in knfu)  # its own keys searched
    assert not any(r["beta"] or r["temperature"] for r in table if r["algorithm"] == "local")
    tuned = load_tuned(tmp_path / TUNED_FILE)
    assert {(e.algorithm, e.cell["alpha"]) for e in tuned.entries} == {
        (a, x) for a in ("local", "knfu") for x in (0.3, 3.0)
    }
    assert tuned.tune_seeds == [1000]


def test_trial_zero_is_the_base_config(tmp_path):
    """Every study's trial 0 runs the base config's own values (so tuned settings must beat the
    defaults on validation); later trials are sampled."""
    base = {
        **TINY,
        "learning-rate": 0.002,
        "temperature": 3.0,
        "neighbour-rule": "top-m",
        "neighbour-top-m": 2,
    }
    sweep = Sweep("t", base, {"alpha": [0.3]}, {"algorithm": ["local", "knfu"]})
    tune_into(tmp_path, sweep, 3, fake_run)
    table = trials_table(tmp_path)
    for row in table:
        first = row["trial"] == "0"
        assert (float(row["learning-rate"]) == 0.002) is first
        assert (row["local-epochs"], row["revisit-epochs"]) == ("2", "1") or not first
    knfu = next(r for r in table if r["algorithm"] == "knfu" and r["trial"] == "0")
    assert (float(knfu["temperature"]), knfu["neighbour-rule"], knfu["neighbour-top-m"]) == (
        3.0,
        "top-m",
        "2",
    )
    assert knfu["include-self"] == cell(ExperimentConfig().fusion.include_self)  # "true"


class KilledAfter:
    """A run function that dies (as Ctrl-C would) on its ``n``-th call."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    def __call__(self, run: PlannedRun, out_dir: str) -> dict:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return fake_run(run, out_dir)


def test_a_killed_tune_resumes_to_the_same_answers(tmp_path):
    """Killed in its second trial (one of its two seeds run), the same command again ends as an
    uninterrupted tune, repeating no finished run; the folder refuses another setup."""
    sweep = Sweep("t", TINY, {}, {"algorithm": ["knfu"]})
    tune_into(tmp_path / "whole", sweep, 5, fake_run, n_seeds=2)
    with pytest.raises(KeyboardInterrupt):
        tune_into(tmp_path / "killed", sweep, 5, KilledAfter(4), n_seeds=2)
    assert len(read_rows(tmp_path / "killed" / "runs.jsonl")) == 3
    tune_into(tmp_path / "killed", sweep, 5, fake_run, n_seeds=2)  # the same command again
    whole, resumed = (tmp_path / d / TUNED_FILE for d in ("whole", "killed"))
    assert whole.read_text() == resumed.read_text()
    table = trials_table(tmp_path / "killed")
    assert [r["state"] for r in table].count("interrupted") == 1
    assert [r for r in table if r["state"] != "interrupted"] == trials_table(tmp_path / "whole")
    assert len(read_rows(tmp_path / "killed" / "runs.jsonl")) == 10  # 5 trials x 2 seeds, once each
    again = KilledAfter(1)  # a finished tune runs nothing more
    tune_into(tmp_path / "killed", sweep, 5, again, n_seeds=2)
    assert again.calls == 0
    with pytest.raises(ConfigError, match="another config or seeds"):
        tune_into(tmp_path / "killed", sweep, 5, fake_run, n_seeds=3)


def test_studies_side_by_side_choose_as_one_at_a_time(tmp_path):
    tune_into(tmp_path / "one", GRID, 2, fake_run)
    tune_into(tmp_path / "two", GRID, 2, fake_run, workers=2)
    assert (tmp_path / "one" / TUNED_FILE).read_text() == (tmp_path / "two" / TUNED_FILE).read_text()


def test_search_space_is_each_algorithms_own():
    """Temperature exactly where the algorithm shares predictions at a free T; other keys its own
    settings; compute never tuned; every registered algorithm has an entry."""
    assert set(FUSIONS.names()) <= set(SPACES)
    assert all(space[: len(SHARED)] == SHARED for space in SPACES.values())  # the docs' table says so
    shared = set(keys_of(SHARED))
    for name in FUSIONS.names():
        algorithm, keys = FUSIONS.get(name), keys_of(SPACES[name])
        assert set(keys) <= set(config_keys()), name
        soft = algorithm.uploads_predictions or algorithm.uploads == "class-predictions"  # rows at T
        free_t = soft and algorithm.fixed_temperature is None
        assert ("temperature" in keys) == free_t, name
        assert set(keys) - shared - {"temperature"} <= set(algorithm.keys), name
    assert "feddf-server-steps" not in keys_of(SPACES["feddf"])
    assert keys_of(SPACES["self-distill"]) == keys_of(SPACES["fedmd"])  # the control: knfu's T, no peers


def test_suggestions_stay_in_range_and_keep_the_epoch_budget():
    flat = ExperimentConfig().with_overrides(TINY).to_run_config()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rules = set()
    for _ in range(40):
        chosen = suggest(SPACES["knfu"], study.ask(), flat)
        assert chosen["local-epochs"] + chosen["revisit-epochs"] == 3 and chosen["local-epochs"] >= 1
        assert 3e-4 <= chosen["learning-rate"] <= 1e-2 and 0.1 <= chosen["beta"] <= 100
        assert 1 <= chosen["temperature"] <= 10
        rules.add(chosen["neighbour-rule"])
        assert ("neighbour-top-m" in chosen) == (chosen["neighbour-rule"] == "top-m")
        assert 1 <= chosen.get("neighbour-top-m", 1) <= 2  # 3 clients: at most 2 others
    assert rules == {"mean-threshold", "fixed-threshold", "top-m"}


def test_unknown_algorithm_tunes_the_shared_keys_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="flwr.fedkd"):
        assert space_of("brand-new") == SHARED
    assert "no search space for algorithm 'brand-new'" in caplog.text


def test_docs_hold_the_search_space():
    assert render_markdown() in (ROOT / "docs" / "tuning.md").read_text()
    usage = (ROOT / "docs" / "usage.md").read_text()  # the cookbook states the default and links the space
    assert f"{DEFAULT_TRIALS} Optuna trials" in usage and "[tuning.md](tuning.md)" in usage
    assert "[docs/tuning.md](docs/tuning.md)" in (ROOT / "README.md").read_text()


# -- sweeps that use tuned.toml --------------------------------------------------------------


def with_val_alma(run: PlannedRun, out_dir: str) -> dict:
    """The real run, then a fake val_alma in its final round (until runs record their own)."""
    row = execute(run, out_dir)
    folder = Path(out_dir) / Path(row["results"]).parent
    rounds = load_results(folder)["rounds"]
    if "val_alma" not in rounds[-1]:
        rounds[-1]["val_alma"] = fake_score(run.config.to_run_config())
        write_rounds(folder / "rounds.jsonl", rounds)
    return row


def test_a_tiny_tune_on_digits_feeds_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.tune.execute", with_val_alma)
    sweep_file = tmp_path / "tiny.toml"
    base = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    sweep_file.write_text(
        f'tuned = "tune/tuned.toml"\n[base]\n{base}\n[grid]\nseed = [0]\nalgorithm = ["local", "knfu"]\n'
    )
    runner = CliRunner()
    tuned = runner.invoke(main, ["tune", str(sweep_file), "--trials", "2", "--out", str(tmp_path / "tune")])
    assert tuned.exit_code == 0, tuned.output
    chosen = {e.algorithm: e.settings for e in load_tuned(tmp_path / "tune" / TUNED_FILE).entries}
    assert set(chosen) == {"local", "knfu"} and "beta" in chosen["knfu"]
    done = runner.invoke(main, ["sweep", str(sweep_file), "--out", str(tmp_path / "sweep"), "--workers", "1"])
    assert done.exit_code == 0, done.output
    rows = read_rows(tmp_path / "sweep" / "runs.jsonl")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for row in rows:  # each run ran its algorithm's tuned settings
        settings = chosen[row["axes"]["algorithm"]]
        assert {k: row["config"][k] for k in settings} == settings
        assert row["config"]["seed"] == 0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TUNED_TEXT = """[tune]
tune-seeds = [1000]
[[tuned]]
algorithm = "knfu"
[tuned.cell]
[tuned.settings]
beta = 2.5
[[tuned]]
algorithm = "knfu"
[tuned.cell]
alpha = 3
[tuned.settings]
beta = 7.0
"""


def test_a_run_takes_its_closest_cell_and_the_settings_are_its_identity(tmp_path):
    write(tmp_path / "tuned.toml", TUNED_TEXT)
    sweep = Sweep("t", TINY, {"alpha": [0.3, 3.0]}, {}, tuned=str(tmp_path / "tuned.toml"))
    runs = expand(sweep)
    assert [r.config.fusion.beta for r in runs] == [2.5, 7.0]  # alpha 3.0 is the cell alpha = 3
    plain = expand(Sweep("t", TINY, {"alpha": [0.3, 3.0]}, {}))
    assert {r.run_id for r in runs}.isdisjoint(r.run_id for r in plain)
    assert [r.config.fusion.beta for r in expand(sweep, {"beta": 1})] == [1.0, 1.0]  # --set wins
    local = Sweep("t", {**TINY, "algorithm": "local"}, {}, {}, tuned=str(tmp_path / "tuned.toml"))
    with pytest.raises(ConfigError, match="no settings for algorithm=local"):
        expand(local)
    assert load_sweep(write(tmp_path / "s.toml", 'tuned = "tuned.toml"\n')).tuned == str(
        tmp_path / "tuned.toml"
    )


def test_tuned_settings_are_refused_on_another_base(tmp_path):
    """Settings tuned for one base (its rounds, cap, validation split...) do not carry over."""
    base = ", ".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items() if k not in ("engine", "workers"))
    based = TUNED_TEXT.replace("[tune]", "[tune]\nbase = {" + base + "}", 1)
    write(tmp_path / "tuned.toml", based)
    sweep = Sweep("t", {**TINY, "rounds": 1}, {"alpha": [0.3, 3.0]}, {}, tuned=str(tmp_path / "tuned.toml"))
    assert len(expand(sweep)) == 2  # the base it was tuned on
    other = Sweep("t", {**TINY, "rounds": 2}, {"alpha": [0.3, 3.0]}, {}, tuned=str(tmp_path / "tuned.toml"))
    with pytest.raises(ConfigError, match="was tuned with rounds=1"):
        expand(other)


def one_line_error(args: list[str], match: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("fedkd: error:") and result.output.count("\n") == 1, result.output
    assert match in result.output, result.output


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    tiny = write(
        tmp_path / "tiny.toml", "[base]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    )
    out = ["--out", str(tmp_path / "o")]
    one_line_error(["tune", str(tiny), "--algorithms", "nope", *out], "unknown algorithm 'nope'")
    one_line_error(["tune", str(tiny), "--trials", "0", *out], "--trials=0 is invalid")
    one_line_error(
        ["tune", str(tiny), "--set", "seed=1000", *out], "seed=1000 is both evaluated and a tuning seed"
    )
    one_line_error(["tune", "--config", str(tiny), str(tiny), *out], "not both")
    bad = write(tmp_path / "bad.toml", TUNED_TEXT.replace("beta = 7.0", "betta = 7.0"))
    one_line_error(["sweep", str(tiny), "--tuned", str(bad), *out], "unknown config key 'betta'")
    good = write(tmp_path / "good.toml", TUNED_TEXT)
    axis = write(tmp_path / "axis.toml", tiny.read_text() + '\nalgorithm = "knfu"\n[grid]\nbeta = [1, 2]\n')
    one_line_error(["sweep", str(axis), "--tuned", str(good), *out], "sets 'beta', which the sweep varies")
    on_tuning_seed = [
        "sweep",
        str(tiny),
        "--tuned",
        str(good),
        "--set",
        "algorithm=knfu",
        "--set",
        "seed=1000",
    ]
    one_line_error([*on_tuning_seed, *out], "seed=1000 was a tuning seed")
