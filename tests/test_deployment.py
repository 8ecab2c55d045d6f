"""SuperLink + 2 SuperNodes on loopback with TLS and SuperNode authentication (slow, in CI).

The same ClientApp as in simulation; one SuperNode is killed mid-run and the federation goes
on. Every process started here is stopped by process group at the end, even on failure.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.deploy import (
    make_certificates,
    make_node_keys,
    superlink_command,
    supernode_command,
    write_connection,
)
from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _rounds_done(path: Path) -> int:
    try:
        return len(load_results(path)["rounds"])
    except (OSError, ValueError, KeyError):
        return 0


def _flower_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment with this venv's Flower and its own FLWR_HOME, and a fresh CA + server cert."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    certs = tmp_path / "certs"
    make_certificates(certs, ["localhost", "127.0.0.1"])
    return env, certs


@pytest.mark.slow
def test_tls_authenticated_federation_survives_a_killed_supernode(tmp_path):
    env, certs = _flower_env(tmp_path)
    keys = make_node_keys(tmp_path / "keys", 2)
    link_port = _free_port()
    address = f"127.0.0.1:{link_port}"
    write_connection(tmp_path / "flwr-home", "loopback", address, certs)
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        handle = open(tmp_path / log, "w")
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    out = tmp_path / "out"
    try:
        start(
            # operator networks named: Flower's own ServerApp runner (Runtime API) still gets in
            superlink_command(
                certs, "127.0.0.1", link_port, tmp_path / "state.db", True, ("127.0.0.1/32", "10.0.0.0/8")
            ),
            "superlink.log",
        )
        _wait_port(link_port)
        for _, public in keys:
            reg = subprocess.run(
                [str(BIN / "flwr"), "supernode", "register", str(public), "loopback"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert reg.returncode == 0 and "registered successfully" in reg.stdout, reg.stdout + reg.stderr
        nodes = [
            start(supernode_command(address, certs, private, pid, 2, _free_port()), f"supernode-{pid}.log")
            for pid, (private, _) in enumerate(keys)
        ]
        overrides = (
            f"num-clients=2 rounds=3 models='mlp' local-epochs=1 distill-epochs=1 transfer-size=60 "
            f"min-replies=1 reply-timeout=90.0 out-dir='{out}'"
        )
        run = start(
            [str(BIN / "flwr"), "run", str(ROOT), "loopback", "--run-config", overrides, "--stream"],
            "flwr-run.log",
        )
        deadline = time.monotonic() + 420
        while _rounds_done(out / "results.json") < 1 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.5)
        assert _rounds_done(out / "results.json") >= 1, (tmp_path / "flwr-run.log").read_text()[-3000:]
        _stop_group(nodes[1])  # a device goes away mid-run
        while _rounds_done(out / "results.json") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        saved = load_results(out / "results.json")
        assert len(saved["rounds"]) == 3, (tmp_path / "flwr-run.log").read_text()[-3000:]
        assert saved["environment"]["client_devices"] == {"0": "cpu", "1": "cpu"}
        first, last = saved["rounds"][0], saved["rounds"][-1]
        assert set(first["client_acc"]) == {"0", "1"} and first["failed_clients"] == []
        assert set(last["client_acc"]) == {"0"}
        assert any(f["partition_id"] == 1 for f in last["failed_clients"])
        assert 0.0 < saved["final"]["alma"] <= 1.0
    finally:
        for proc in reversed(procs):
            _stop_group(proc)
    assert all(proc.poll() is not None for proc in procs)


@pytest.mark.slow
def test_control_api_refuses_an_outsider_holding_the_public_ca(tmp_path):
    """The issue's attack: with only ca.crt (its own FLWR_HOME), `flwr supernode register
    attacker.pub` from an address outside the operator's allow-list is refused, and so are
    `flwr ls` and any other Control route (run submission included); the Fleet API stays open."""
    env, certs = _flower_env(tmp_path)
    ((_, attacker_pub),) = make_node_keys(tmp_path / "attacker", 1)
    port = _free_port()
    write_connection(tmp_path / "flwr-home", "target", f"127.0.0.1:{port}", certs)
    # the operator's address is 127.0.0.2: this test's flwr CLI (source 127.0.0.1) is an outsider
    cmd = superlink_command(certs, "127.0.0.1", port, tmp_path / "state.db", True, ("127.0.0.2/32",))
    with open(tmp_path / "superlink.log", "w") as log:
        link = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_port(port)
        attempts = (["supernode", "register", str(attacker_pub), "target"], ["ls", "target"])
        for args in attempts:
            outsider = subprocess.run(
                [str(BIN / "flwr"), *args], env=env, capture_output=True, text=True, timeout=120
            )
            said = outsider.stdout + outsider.stderr
            assert outsider.returncode != 0 and "registered successfully" not in said, said
        import ssl
        import urllib.error
        import urllib.request

        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))

        def post(path: str) -> tuple[int, str]:
            request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=b"", method="POST")
            try:
                with urllib.request.urlopen(request, context=context, timeout=30) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        code, body = post("/v1/control/list-runs")
        assert code == 403 and body.startswith("fedkd:")  # refused by the gate, before Flower
        code, body = post("/v1/fleet/register-node")  # a real Fleet route: reaches Flower (not 403)
        assert code != 403 and "fedkd:" not in body, (code, body)
    finally:
        _stop_group(link)
    log_text = (tmp_path / "superlink.log").read_text()
    assert "Starting Flower SuperLink" in log_text
