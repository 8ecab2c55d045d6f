"""The front door: bad input is one line and exit code 2; good input runs and writes results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--engine",
    "inprocess",
    "--num-clients",
    "3",
    "--rounds",
    "1",
    "--set",
    "local-epochs=1",
    "--set",
    "distill-epochs=1",
    "--set",
    "transfer-size=60",
]


def _run(args):
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--dataset", "imagenet"], "'imagenet' is not one of 'cifar10', 'digits', 'fashion-mnist'"),
        (["run", "--set", "dataset=imagenet"], "unknown dataset 'imagenet'"),
        (["run", "--algorithm", "magic"], "'magic' is not one of 'dsfl', 'fd', 'fedavg', 'feddf'"),
        (["run", "--set", "algorithm=magic"], "unknown algorithm 'magic'"),
        (["run", "--engine", "warp"], "'warp' is not one of 'ray', 'inprocess'"),
        (["partition", "--algorithm", "knfu"], "No such option '--algorithm'"),
        (["audit", "--engine", "ray"], "No such option '--engine'"),
        (["run", "--config", "/nonexistent/results.json"], "does not exist"),
        (["run", "--set", "models=mlp,resnet999"], "unknown model 'resnet999'"),
        (["run", "--alpha", "0"], "alpha=0.0 is invalid; allowed: > 0"),
        (["run", "--alpha", "-2"], "alpha=-2.0 is invalid"),
        (["run", "--num-clients", "1"], "num-clients=1 is invalid; allowed: >= 2"),
        (["run", "--num-clients", "5000"], "num-clients=5000 is too many for digits"),
        (["run", "--rounds", "0"], "rounds=0 is invalid"),
        (["run", "--rounds", "three"], "rounds='three' is not a valid int"),
        (["run", "--set", "warp-speed=9"], "unknown config key 'warp-speed'"),
        (["run", "--set", "neighbor-rule=top-m"], "did you mean 'neighbour-rule'?"),
        (["plot", "runs/nope.json"], "'runs/nope.json' does not exist"),
        (["run", "--set", "novalue"], "--set 'novalue' is malformed"),
        (["run", "--config", "/nonexistent/x.toml"], "does not exist"),
        (["run", "--bogus-flag"], "--bogus-flag"),
        (["audit", "--multipliers", "nan"], "allowed: finite numbers > 0"),
        (["audit", "--multipliers", "0.1,inf"], "allowed: finite numbers > 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragment):
    result = _run(args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("fedkd: error:") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_malformed_config_file_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("alpha = [unclosed\n")
    result = _run(["run", "--config", str(bad)])
    assert result.exit_code == 2 and "is not valid TOML" in result.output


def test_dry_run_prints_the_split_and_runs_nothing(tmp_path):
    result = _run(["run", *TINY, "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "client   2:" in result.output and "params" in result.output
    assert "nothing was trained" in result.output
    assert not (tmp_path / "results.json").exists()


def test_config_file_then_shorthands_then_set(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('algorithm = "fedmd"\nalpha = 0.3\nrounds = 9\n')
    result = _run(["run", "--config", str(conf), "--alpha", "0.7", "--set", "alpha=0.9", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "fedmd on digits" in result.output and "alpha=0.9" in result.output and "9 rounds" in result.output


def test_console_script_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "round   1/1 | ALMA" in proc.stdout
    saved = load_results(out / "results.json")
    assert saved["final"]["alma"] == pytest.approx(saved["rounds"][-1]["alma"])


def test_keys_lists_every_run_config_key():
    result = _run(["keys"])
    assert result.exit_code == 0 and "beta = 10.0" in result.output and "num-clients = 10" in result.output


# Listing commands answer at once: none may load torch, Flower, Ray, numpy or scipy.
HEAVY = ("torch", "flwr", "ray", "numpy", "scipy")
LISTING_SCRIPT = """
import json, sys
from click.testing import CliRunner
from experiments.cli import main

def listings():
    yield ["keys"], "num-clients = 10"
    yield ["keys", "--toml"], "allowed: cifar10, digits"
    yield ["algorithms"], "knfu-guard"
    yield ["--help"], "Commands:"
    for name, command in sorted(main.commands.items()):
        yield [name, "--help"], "Usage:"
        for sub in sorted(getattr(command, "commands", {})):
            yield [name, sub, "--help"], "Usage:"

loaded = {}
for args, expected in listings():
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and expected in result.output, (args, result.output)
    loaded[" ".join(args)] = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(json.dumps(loaded))
"""


def test_listing_commands_import_neither_torch_nor_flower(tmp_path):
    """Each listing and every --help, in turn in one fresh interpreter, with the heavy packages
    loaded once it has run (a structural check, not a timed one): the first to load one is to blame."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree, wherever fedkd is installed from
    proc = subprocess.run(
        [sys.executable, "-c", LISTING_SCRIPT, *HEAVY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout)
    assert {"keys --toml", "algorithms", "run --help", "deploy superlink --help"} <= set(loaded)
    assert {args: heavy for args, heavy in loaded.items() if heavy} == {}


def test_deploy_commands_print_secure_flower_commands_and_refuse_bad_input(tmp_path):
    creds = tmp_path / "creds"
    made = _run(["deploy", "credentials", "--out", str(creds), "--nodes", "1"])
    assert (
        made.exit_code == 0
        and (creds / "certs" / "ca.crt").exists()
        and (creds / "keys" / "node-0.pub").exists()
    )
    # the CA's private key is not in what SuperNodes receive; folders 0700, private keys 0600
    assert not (creds / "certs" / "ca.key").exists() and (creds / "ca" / "ca.key").exists()
    for folder in ("certs", "keys", "ca"):
        assert (creds / folder).stat().st_mode & 0o777 == 0o700, folder
    assert (creds / "keys" / "node-0").stat().st_mode & 0o777 == 0o600
    before = (creds / "keys" / "node-0").read_bytes()
    again = _run(["deploy", "credentials", "--out", str(creds), "--nodes", "1"])
    assert again.exit_code == 2 and "--force" in again.output
    assert (creds / "keys" / "node-0").read_bytes() == before  # nothing replaced
    assert _run(["deploy", "credentials", "--out", str(creds), "--nodes", "1", "--force"]).exit_code == 0
    assert (creds / "keys" / "node-0").read_bytes() != before
    public = _run(["deploy", "superlink", "--certs", str(creds / "certs"), "--host", "0.0.0.0", "--print"])
    assert public.exit_code == 0 and "Control API answers only loopback" in public.output
    assert "server.deploy.control_gate" in public.output
    lab = _run(
        ["deploy", "superlink", "--certs", str(creds / "certs"), "--control-from", "10.0.0.0/24", "--print"]
    )
    assert lab.exit_code == 0 and "--control-from 10.0.0.0/24" in lab.output
    bad_net = _run(["deploy", "superlink", "--certs", str(creds / "certs"), "--control-from", "10.0.0.300"])
    assert bad_net.exit_code == 2 and "'10.0.0.300'" in bad_net.output
    link = _run(["deploy", "superlink", "--certs", str(creds / "certs"), "--print"])
    assert (
        link.exit_code == 0 and "--enable-supernode-auth" in link.output and "--ssl-certfile" in link.output
    )
    node = _run(
        [
            "deploy",
            "supernode",
            "--superlink",
            "10.1.2.3:8000",
            "--certs",
            str(creds / "certs"),
            "--key",
            str(creds / "keys" / "node-0"),
            "--partition-id",
            "0",
            "--num-partitions",
            "2",
            "--data-dir",
            "/data",
            "--print",
        ]
    )
    assert node.exit_code == 0 and "partition-id=0 num-partitions=2" in node.output
    assert "--auth-supernode-private-key" in node.output
    insecure = _run(["deploy", "superlink", "--insecure", "--print"])
    assert (
        insecure.exit_code == 0
        and "WARNING: --insecure" in insecure.output
        and "--insecure" in insecure.output
    )
    for args, fragment in [
        (["deploy", "superlink", "--print"], "--certs DIR is required"),
        (
            [
                "deploy",
                "supernode",
                "--superlink",
                "h:1",
                "--partition-id",
                "2",
                "--num-partitions",
                "2",
                "--insecure",
            ],
            "--partition-id=2 is invalid; allowed: 0..1",
        ),
        (
            [
                "deploy",
                "supernode",
                "--superlink",
                "h:1",
                "--partition-id",
                "0",
                "--num-partitions",
                "2",
                "--certs",
                str(creds / "certs"),
            ],
            "--key FILE is required",
        ),
    ]:
        bad = _run(args)
        assert bad.exit_code == 2 and fragment in bad.output


def test_a_bad_out_folder_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, fragment in [(a_file, "is a file"), (a_file / "sub", "cannot be created")]:
        result = _run(["run", *TINY, "--out", str(out)])
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert "client" not in result.output  # refused before the split was even described


def test_existing_results_are_kept_unless_overwrite_is_given(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    result = _run(["run", *TINY, "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert json.loads((out / "results.json").read_text()) == {"keep": True}
    again = _run(["run", *TINY, "--out", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["rounds_done"] == 1
