"""The SuperLink's Control/Runtime gate: who may reach which path (fast, no SuperLink)."""

import asyncio

import pytest

from server.deploy.control_gate import (
    LOOPBACK,
    ControlGate,
    _own_address,
    _split,
    main,
    parse_networks,
    peer_allowed,
)


def _call(path: str, host: str | None) -> tuple[int, bool]:
    """(status the gate sent, whether the wrapped app was reached) for one HTTP request."""
    reached = []
    sent = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "client": (host, 5000) if host else None}
    gate = ControlGate(app, parse_networks(["10.0.0.0/8", *LOOPBACK]), parse_networks(LOOPBACK))
    asyncio.run(gate(scope, receive, send))
    return sent[0]["status"], bool(reached)


@pytest.mark.parametrize("path", ["/v1/control/register-node", "/v1/control/list-runs", "/v1/runtime/x"])
def test_control_and_runtime_paths_are_refused_to_outsiders_and_open_to_loopback(path):
    assert _call(path, "203.0.113.7") == (403, False)
    assert _call(path, None) == (403, False)  # no peer address: refused, never assumed local
    assert _call(path, "127.0.0.1") == (200, True)
    assert _call(path, "::1") == (200, True)


def test_operator_networks_reach_control_but_never_runtime():
    assert _call("/v1/control/list-runs", "10.0.0.5") == (200, True)
    assert _call("/v1/runtime/pull-messages", "10.0.0.5") == (403, False)


def test_fleet_and_health_paths_are_never_gated():
    assert _call("/v1/fleet/pull-messages", "203.0.113.7") == (200, True)
    assert _call("/health", "203.0.113.7") == (200, True)


def test_allow_list_matching():
    lab = parse_networks(["10.0.0.0/24", "192.0.2.9"])
    assert peer_allowed("10.0.0.77", lab) and peer_allowed("192.0.2.9", lab)
    assert not peer_allowed("10.0.1.1", lab) and not peer_allowed("192.0.2.10", lab)
    assert peer_allowed("::ffff:10.0.0.3", lab)  # IPv4-mapped IPv6 peers are matched as IPv4
    assert not peer_allowed("not-an-ip", lab) and not peer_allowed("", lab)


def test_bad_network_names_the_value():
    with pytest.raises(ValueError, match="'10.0.0.300'.*CIDR"):
        parse_networks(["10.0.0.300"])


def test_our_options_and_flowers_are_split_at_the_double_dash():
    assert _split(["--control-from", "10.0.0.0/8", "--", "--host", "x"]) == (
        ["--control-from", "10.0.0.0/8"],
        ["--host", "x"],
    )
    assert _split(["--host", "x"]) == (["--host", "x"], [])


def test_the_bind_address_is_allowed_and_wildcards_are_not():
    assert _own_address(["--host", "10.1.2.3", "--port", "8000"]) == ["10.1.2.3"]
    assert _own_address(["--host", "0.0.0.0"]) == [] and _own_address(["--host", "::"]) == []
    assert _own_address(["--port", "8000"]) == []


def test_main_installs_the_gate_around_flowers_app_with_loopback_and_extra_networks(monkeypatch, tmp_path):
    """Flower's real entry point, up to uvicorn.run: the app it would serve is our gate."""
    import importlib

    import flwr.superlink.main as superlink_main

    flower_superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")  # the module

    served = {}
    monkeypatch.setattr(flower_superlink.uvicorn, "run", lambda app, **kw: served.update(app=app, kw=kw))
    monkeypatch.setattr(superlink_main, "create_app", superlink_main.create_app)  # undone after the test
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    args = ["--control-from", "10.0.0.0/8", "--", "--insecure", "--host", "127.0.0.1", "--port", "1"]
    monkeypatch.chdir(tmp_path)
    main([*args, "--database", str(tmp_path / "state.db")])
    gate = served["app"]
    assert isinstance(gate, ControlGate)
    assert peer_allowed("10.9.9.9", gate.control) and not peer_allowed("127.0.0.1", gate.control)
    assert not peer_allowed("192.0.2.1", gate.control)
    assert peer_allowed("127.0.0.1", gate.runtime) and not peer_allowed("10.9.9.9", gate.runtime)
    assert served["kw"]["proxy_headers"] is False  # the peer address is the TCP peer's


def test_an_ungated_grpc_control_api_is_refused(monkeypatch):
    monkeypatch.setenv("FLWR_INTERNAL_GRPC_CONTROL_API", "1")
    with pytest.raises(SystemExit) as stop:
        main(["--", "--insecure"])
    assert stop.value.code == 2


SPOOFS = [
    {"x-forwarded-for": "10.9.9.9"},
    {"x-forwarded-for": "10.9.9.9, 127.0.0.1"},
    {"x-forwarded-for": "10.9.9.9", "x-forwarded-proto": "https", "x-forwarded-host": "10.9.9.9"},
    {"forwarded": "for=10.9.9.9;proto=https"},
    {"forwarded": 'for="[::ffff:10.9.9.9]"'},
    {"x-real-ip": "10.9.9.9"},
    {"x-client-ip": "10.9.9.9", "true-client-ip": "10.9.9.9", "cf-connecting-ip": "10.9.9.9"},
    {"x-original-forwarded-for": "10.9.9.9", "x-cluster-client-ip": "10.9.9.9", "client-ip": "10.9.9.9"},
]


@pytest.mark.parametrize("headers", SPOOFS, ids=lambda h: ",".join(h))
def test_forwarded_headers_never_change_who_the_caller_is(monkeypatch, tmp_path, headers):
    """The app exactly as uvicorn would serve it (main's options, uvicorn's own Config): a local
    caller claiming an allowed network in any forwarding header is still a local caller, refused
    when --control-from leaves loopback out; a real caller from that network gets through."""
    import importlib

    import flwr.superlink.main as superlink_main
    import uvicorn

    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    served = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kw: served.update(app=app, kw=kw))
    monkeypatch.setattr(superlink_main, "create_app", superlink_main.create_app)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    monkeypatch.chdir(tmp_path)
    main(["--control-from", "10.9.9.0/24", "--", "--insecure", "--database", str(tmp_path / "state.db")])
    reached = []

    async def flower(scope, receive, send):  # stands in for Flower's app behind the gate
        reached.append(scope["client"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    served["app"].app = flower
    config = uvicorn.Config(served["app"], **{k: v for k, v in served["kw"].items() if k != "log_config"})
    config.load()

    def status(peer: str) -> int:
        sent = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/control/list-runs",
            "raw_path": b"/v1/control/list-runs",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": (peer, 50000),
            "server": ("127.0.0.1", 9093),
        }

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(config.loaded_app(scope, receive, send))
        return sent[0]["status"]

    assert status("127.0.0.1") == 403 and status("::1") == 403 and not reached
    assert status("10.9.9.9") == 200 and reached == [("10.9.9.9", 50000)]
