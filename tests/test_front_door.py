"""The front door: every run lands in a folder, its config.toml repeats it, every option is explained."""

import json
import re
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import click
from click.testing import CliRunner
from flwr.app import Context, RecordDict

import experiments.cli as cli
import experiments.cli_results as cli_results
import experiments.run_setup as run_setup
from clients.client_app import app as flwr_client_app
from experiments.engines import task_identity
from fedkd.config import ExperimentConfig
from fedkd.config_files import load_config_file
from fedkd.results import default_out_dir
from fedkd.results_files import load_results
from fedkd.validation import validate_config
from server.inprocess.grid import InProcessGrid
from server.server_app import app as flwr_server_app
from tests.test_cli import TINY

ROOT = Path(__file__).resolve().parents[1]
STAMP = r"\d{8}-\d{6}"


def _run(args):
    return CliRunner().invoke(cli.main, args)


def _finals(folder: Path):
    saved = load_results(folder / "results.json")
    return saved["final"]["alma"], saved["final"]["global_acc"], [r["client_acc"] for r in saved["rounds"]]


def test_a_run_without_out_lands_in_a_default_folder_and_says_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(["run", *TINY])
    assert result.exit_code == 0, result.output
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and re.fullmatch(rf"knfu-digits-{STAMP}", folders[0].name)
    said = [line for line in result.output.splitlines() if line.startswith("results: ")]
    assert said == [f"results: {folders[0] / 'results.json'}"] * 2  # at the start and at the end
    assert json.loads((folders[0] / "results.json").read_text())["status"] == "completed"
    assert (folders[0] / "config.toml").is_file()


def test_a_dry_run_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(["run", *TINY, "--dry-run"])
    assert result.exit_code == 0 and "nothing was trained" in result.output
    assert list(tmp_path.iterdir()) == [] and "results:" not in result.output


def test_default_folder_names_algorithm_dataset_time_and_never_reuses_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig().with_overrides({"algorithm": "fedmd", "dataset": "mnist"})
    when = datetime(2024, 5, 6, 7, 8, 9)
    first = default_out_dir(cfg, when)
    assert first == Path("runs/fedmd-mnist-20240506-070809") and first.is_dir()  # reserved
    assert default_out_dir(cfg, when) == Path("runs/fedmd-mnist-20240506-070809-2")


def test_runs_started_in_the_same_second_by_separate_processes_get_separate_folders(tmp_path):
    """Each process reserves its folder by creating it: no two share one, however they interleave."""
    script = (
        "import sys; from datetime import datetime; from fedkd.config import ExperimentConfig; "
        "from fedkd.results import default_out_dir; "
        "print(default_out_dir(ExperimentConfig(), datetime(2024, 5, 6, 7, 8, 9), base=sys.argv[1]))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    folders = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert len(set(folders)) == 6 and all(Path(f).is_dir() for f in folders)


def test_flwr_run_server_app_without_out_dir_lands_in_a_default_folder(tmp_path, monkeypatch):
    """The `flwr run` entry points (config from run_config), driven by the in-process grid."""
    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig().with_overrides(
        {"num-clients": 3, "rounds": 1, "local-epochs": 1, "distill-epochs": 1, "transfer-size": 60}
    )
    run_config = cfg.to_run_config()
    assert run_config["out-dir"] == ""
    grid = InProcessGrid(flwr_client_app, 3, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    with task_identity(run_id=1):
        flwr_server_app(grid, context)
    (folder,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(rf"knfu-digits-{STAMP}", folder.name)
    saved = json.loads((folder / "results.json").read_text())
    assert saved["status"] == "completed" and saved["run_config"]["out-dir"] == str(folder)
    assert (folder / "config.toml").is_file()


def test_keys_toml_is_commented_toml_that_loads_back_to_the_same_config(tmp_path, monkeypatch):
    result = _run(["keys", "--toml"])
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.output) == ExperimentConfig().to_run_config()
    lines = result.output.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):  # a key: the line above explains it
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10, line
    path = tmp_path / "all-keys.toml"
    path.write_text(result.output)
    seen = []
    real = run_setup.describe_federation
    monkeypatch.setattr(run_setup, "describe_federation", lambda cfg: seen.append(cfg) or real(cfg))
    loaded = _run(["run", "--config", str(path), "--dry-run"])
    assert loaded.exit_code == 0, loaded.output
    assert seen == [ExperimentConfig()]


def test_a_runs_config_toml_and_results_json_repeat_it_exactly(tmp_path):
    first = tmp_path / "first"
    done = _run(["run", *TINY, "--out", str(first)])
    assert done.exit_code == 0, done.output
    saved = json.loads((first / "results.json").read_text())
    written = tomllib.loads((first / "config.toml").read_text())
    assert "out-dir" not in written  # a repeat lands in its own folder
    assert written == {k: v for k, v in saved["run_config"].items() if k != "out-dir"}
    assert saved["run_config"]["transfer-size"] == 60 and saved["run_config"]["engine"] == "inprocess"
    for source, again in [
        (first / "config.toml", tmp_path / "again"),
        (first / "results.json", tmp_path / "json"),
    ]:
        repeat = _run(["run", "--config", str(source), "--out", str(again)])
        assert repeat.exit_code == 0, repeat.output
        assert _finals(again) == _finals(first)
        rerun = json.loads((again / "results.json").read_text())["run_config"]
        assert rerun == {**saved["run_config"], "out-dir": str(again)}


EXAMPLES = sorted((ROOT / "experiments" / "configs").glob("*.toml"))


def test_shipped_example_configs_are_valid_and_one_dry_runs():
    assert len(EXAMPLES) >= 2
    for path in EXAMPLES:
        keys = load_config_file(path)
        assert len(keys) >= 5, path
        validate_config(ExperimentConfig().with_overrides(keys))
    result = _run(["run", "--config", str(ROOT / "experiments/configs/knfu-digits.toml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "knfu on digits | 10 clients" in result.output and "nothing was trained" in result.output


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_option_of_every_command_has_help():
    missing = []
    for path, command in _commands(cli.main):
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"fedkd {path} {param.opts[0]}")
    assert not missing, missing
    assert sum(1 for _ in _commands(cli.main)) >= 10  # the walk saw the deploy subcommands too


def test_fixed_value_options_are_choices_and_commands_show_only_what_they_use():
    options = {p.name: p for p in cli.run.params}
    for name in ("algorithm", "engine", "dataset"):
        assert isinstance(options[name].type, click.Choice), name
    assert "knfu" in options["algorithm"].type.choices and "digits" in options["dataset"].type.choices
    partition = {p.name for p in cli_results.partition.params}
    audit = {p.name for p in cli_results.audit.params}
    assert not {"algorithm", "engine", "rounds"} & partition and "seed" in partition
    assert not {"algorithm", "engine"} & audit and {"rounds", "seed", "multipliers"} <= audit


def test_choice_options_still_reach_the_config():
    result = _run(
        ["run", "--engine", "inprocess", "--algorithm", "fedmd", "--dataset", "digits", "--dry-run"]
    )
    assert (
        result.exit_code == 0 and "fedmd on digits" in result.output and "engine inprocess" in result.output
    )
