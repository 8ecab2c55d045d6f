"""docs/extending.md works as written: its code blocks (each starting ``# file: PATH``) are run
here. The Python front door (fedkd.run, fedkd.make_config) runs in this process; the plugin
package is built from the page, installed outside fedkd's tree and used by `fedkd algorithms`,
`fedkd run` and `fedkd sweep` in their own processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fedkd
from fedkd.config import ExperimentConfig
from fedkd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
HEAVY = ("torch", "flwr", "ray", "numpy")


def recipes() -> dict[str, str]:
    """Path -> code of every block of docs/extending.md that starts with ``# file: PATH``."""
    blocks = re.findall(r"```\w*\n# file: (\S+)\n(.*?)```", PAGE.read_text(), flags=re.S)
    return dict(blocks)


def run_recipe(name: str) -> tuple[dict, str]:
    """Execute one of the page's scripts here: its globals and what it printed."""
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(recipes()[name], f"docs/extending.md:{name}", "exec"), namespace)
    return namespace, printed.getvalue()


def test_import_fedkd_stays_light_and_offers_run_and_make_config():
    code = (
        "import sys, fedkd; heavy = sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])); "
        "print(heavy, fedkd.__all__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *HEAVY], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.split() == ["[]", "['make_config',", "'run']"], proc.stderr[-2000:]


def test_make_config_takes_a_config_a_mapping_or_a_toml_file_and_keys_over_it(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('algorithm = "fedmd"\nnum-clients = 4\n')
    from_file = fedkd.make_config(toml, num_clients=3, rounds=2)
    assert (from_file.fusion.algorithm, from_file.data.num_clients, from_file.run.rounds) == ("fedmd", 3, 2)
    assert fedkd.make_config({"num-clients": 3, "rounds": 2}, algorithm="fedmd") == from_file
    assert fedkd.make_config(from_file) == from_file
    assert fedkd.make_config() == ExperimentConfig()
    with pytest.raises(ConfigError, match="unknown algorithm 'nope'; allowed: "):
        fedkd.make_config(algorithm="nope")
    with pytest.raises(ConfigError, match="rounds='2' is not an integer"):
        fedkd.make_config(rounds="2")  # typed values, as in TOML
    with pytest.raises(ConfigError, match="config 3 is a int; allowed: an ExperimentConfig"):
        fedkd.make_config(3)


def test_the_notebook_recipe_runs_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, printed = run_recipe("notebook.py")
    results = namespace["results"]
    assert len(results.rounds) == 2 and results.path is None and not list(tmp_path.iterdir())
    assert 0 < results.final["alma"] <= 1 and printed.split()[0] == str(results.final["alma"])


def test_run_with_out_writes_the_run_folder_as_fedkd_run_does(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('algorithm = "fedmd"\nnum-clients = 3\nengine = "inprocess"\nworker-pool = "threads"\n')
    seen: list[int] = []
    results = fedkd.run(toml, out=tmp_path / "run", rounds=1, on_round=lambda r: seen.append(r["round"]))
    assert seen == [1] and results.path == tmp_path / "run" / "results.json"
    saved = json.loads(results.path.read_text())
    assert saved["run_config"]["algorithm"] == "fedmd" and saved["final"] == pytest.approx(results.final)
    with pytest.raises(ConfigError, match="results.json already exists"):  # no overwrite unless asked
        fedkd.run(toml, out=tmp_path / "run", rounds=1)


def test_the_npz_recipe_runs_on_the_arrays_it_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, printed = run_recipe("own_data.py")
    results = namespace["results"]
    assert results.payload["run_config"]["dataset"] == "npz" and (tmp_path / "mine.npz").is_file()
    assert printed.strip() == str(results.final["alma"]) and 0 < results.final["alma"] <= 1


def test_the_metric_recipe_reads_every_clients_accuracy_from_the_rounds():
    _, printed = run_recipe("metric.py")
    spread = json.loads(printed)
    assert len(spread) == 2 and all(0 <= s <= 1 for s in spread)


def _fedkd(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


TINY = ["--num-clients", "3", "--rounds", "2", "--engine", "inprocess", "--set", "local-epochs=1"]
SWEEP = """name = "mylab"
[base]
dataset = "inverted-digits"
models = "tiny-cnn,mlp"
engine = "inprocess"
num-clients = 3
rounds = 1
local-epochs = 1
transfer-size = 60
[grid]
algorithm = ["median", "local"]
"""


@pytest.mark.slow
def test_an_installed_plugin_package_is_listed_run_and_swept_without_touching_fedkd(tmp_path):
    package = tmp_path / "fedkd-mylab"
    for name, code in recipes().items():
        if name == "pyproject.toml" or name.startswith("mylab_fedkd/"):
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(code)
    site = tmp_path / "site"  # a throwaway environment: fedkd from this tree, the plugin from here
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(package)], check=True, capture_output=True, timeout=600)
    assert list(site.glob("fedkd_mylab-0.1.0.dist-info/entry_points.txt"))  # what discovery reads
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    tree_before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)

    listed = _fedkd(env, tmp_path, "algorithms").stdout.splitlines()
    assert any(line.startswith("median ") and "median of the clients' predictions" in line for line in listed)

    out = tmp_path / "run"
    args = ["run", *TINY, "--algorithm", "median", "--dataset", "inverted-digits", "--out", str(out)]
    _fedkd(env, tmp_path, *args, "--set", "models=tiny-cnn,mlp", "--set", "median-sharpen=2")
    config = json.loads((out / "results.json").read_text())["run_config"]
    assert config["median-sharpen"] == 2.0  # the plugin's own key, in the run's identity
    toml = (out / "config.toml").read_text()
    assert "# median: exponent on the per-class median" in toml and "median-sharpen = 2.0" in toml
    assert "  median: median-sharpen" in listed  # `fedkd algorithms` lists its keys
    wrong = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", "--dry-run", "--set", "median-sharpen=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2 and "median-sharpen=0.0 is invalid; allowed: > 0" in wrong.stderr
    for line in (out / "rounds.jsonl").read_text().splitlines():  # the plugin's metric, recorded
        record = json.loads(line)
        assert sorted(record["client_confidence"]) == ["0", "1", "2"] and 0 < record["confidence"] <= 1
    assert (config["algorithm"], config["dataset"], config["models"]) == (
        "median",
        "inverted-digits",
        "tiny-cnn,mlp",
    )

    (tmp_path / "mylab.toml").write_text(SWEEP)
    _fedkd(env, tmp_path, "sweep", "mylab.toml", "--out", "swept", "--workers", "1")
    rows = [json.loads(line) for line in (tmp_path / "swept" / "runs.jsonl").read_text().splitlines()]
    assert sorted(row["axes"]["algorithm"] for row in rows if row["status"] == "ok") == ["local", "median"]
    assert {(row["config"]["dataset"], row["config"]["models"]) for row in rows} == {
        ("inverted-digits", "tiny-cnn,mlp")
    }
    _fedkd(env, tmp_path, "report", "swept")
    header = (tmp_path / "swept" / "runs.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["confidence", "status"]
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    assert after.stdout == tree_before.stdout
