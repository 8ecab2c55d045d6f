"""Flower's SuperLink with its Control and Runtime APIs closed to everyone but the operator.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (`flwr run`, `flwr supernode
register`, `flwr ls`) and the Runtime API (the ServerApp's own process) on one HTTP port, and the
Control API has no authentication in the open-source build: whoever reaches the port and holds
the public ``ca.crt`` can register a node key. SuperNode authentication only protects the Fleet
API. This module runs the unchanged ``flower-superlink`` but wraps its ASGI app in
:class:`ControlGate`, which answers 403 to any Control or Runtime request whose peer address is
outside an allow-list (default: loopback). Remote operators reach the Control API through an SSH
tunnel (``ssh -L 8000:127.0.0.1:8000 server``), which arrives from loopback.

Run as ``python -m server.control_gate [--control-from CIDR ...] -- <flower-superlink args>``;
``fedkd deploy superlink`` does this for you.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

GATED_PREFIXES = ("/v1/control", "/v1/runtime")
LOOPBACK = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDRs (or single addresses) as networks; a bad one is a one-line ValueError naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(
                f"--control-from {value!r} is not an IP address or CIDR network (e.g. 10.0.0.0/24)"
            ) from None
    return networks


def peer_allowed(host: str | None, networks: list[Network]) -> bool:
    """Whether ``host`` (the TCP peer uvicorn reports) lies in one of ``networks``."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class ControlGate:
    """ASGI wrapper: Control and Runtime paths only from allowed peers; Fleet and health open."""

    def __init__(self, app: ASGIApp, networks: list[Network]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path", "").startswith(GATED_PREFIXES):
            client = scope.get("client") or (None, None)
            if not peer_allowed(client[0], self.networks):
                await _refuse(scope, send, client[0])
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send, host: str | None) -> None:
    body = (
        f"fedkd: the Control API accepts requests only from the operator's addresses; "
        f"{host or 'unknown peer'} is not one of them\n"
    ).encode()
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    """Parse our own options, then run Flower's SuperLink entry point with the gate installed."""
    argv = sys.argv[1:] if argv is None else argv
    ours, flower_args = _split(argv)
    parser = argparse.ArgumentParser(prog="python -m server.control_gate")
    parser.add_argument("--control-from", action="append", default=None, metavar="CIDR")
    args = parser.parse_args(ours)
    try:
        networks = parse_networks(args.control_from or LOOPBACK)
    except ValueError as err:
        parser.exit(2, f"fedkd: {err}\n")

    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli.flower_superlink import flower_superlink

    create_app = superlink_main.create_app

    def gated_create_app(*a, **kw):  # Flower imports create_app from this module at call time
        return ControlGate(create_app(*a, **kw), networks)

    superlink_main.create_app = gated_create_app
    sys.argv = ["flower-superlink", *flower_args]
    flower_superlink()


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our options, Flower's options) around the first ``--``."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


if __name__ == "__main__":
    main()
