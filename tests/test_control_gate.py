"""The SuperLink's Control/Runtime gate: who may reach which path (fast, no SuperLink)."""

import asyncio

import pytest

from server.control_gate import LOOPBACK, ControlGate, _split, parse_networks, peer_allowed


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
    asyncio.run(ControlGate(app, parse_networks(LOOPBACK))(scope, receive, send))
    return sent[0]["status"], bool(reached)


@pytest.mark.parametrize("path", ["/v1/control/register-node", "/v1/control/list-runs", "/v1/runtime/x"])
def test_control_and_runtime_paths_are_refused_to_outsiders_and_open_to_loopback(path):
    assert _call(path, "203.0.113.7") == (403, False)
    assert _call(path, "10.0.0.5") == (403, False)
    assert _call(path, None) == (403, False)  # no peer address: refused, never assumed local
    assert _call(path, "127.0.0.1") == (200, True)
    assert _call(path, "::1") == (200, True)


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
