"""Flower's SuperLink with its Control and Runtime APIs closed to everyone off the server.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (`flwr run`, `flwr supernode
register`, `flwr ls`) and the Runtime API (the ServerApp's own process) on one HTTP port, and the
Control API has no authentication in the open-source build: whoever reaches the port and holds
the public ``ca.crt`` can register a node key. SuperNode authentication only protects the Fleet
API. This module runs the unchanged ``flower-superlink`` but wraps its ASGI app in
:class:`ControlGate`, which answers 403 to any Control or Runtime request whose peer address is
outside an allow-list. Control: the ``--control-from`` networks, loopback when none is given.
Runtime: loopback and the SuperLink's own bind address, always and only (Flower's ServerApp
runner on the same host). Loopback means any local user or process on the server host: the gate
keeps out the network, not local accounts. Remote operators reach the Control API through an SSH
tunnel (``ssh -L 8000:127.0.0.1:8000 server``), which arrives from loopback, or from networks
named with ``--control-from`` (list 127.0.0.1/32 too to keep loopback). The gate decides on the
TCP peer address alone: uvicorn's proxy headers are switched off, so no ``X-Forwarded-For``,
``Forwarded`` or ``X-Real-IP`` header changes who a caller is.

Run as ``python -m server.deploy.control_gate [--control-from CIDR ...] -- <flower-superlink args>``;
``fedkd deploy superlink`` does this for you.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

CONTROL_PREFIX = "/v1/control"  # flwr run / ls / supernode register: the operator's
RUNTIME_PREFIX = "/v1/runtime"  # the ServerApp runner's, on the SuperLink host itself
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
    """ASGI wrapper: Control paths only from ``control`` peers, Runtime paths only from
    ``runtime`` peers (the SuperLink host); Fleet and health open to all."""

    def __init__(self, app: ASGIApp, control: list[Network], runtime: list[Network]) -> None:
        self.app = app
        self.control = control
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope.get("path", "")
            allowed = (
                self.control
                if path.startswith(CONTROL_PREFIX)
                else self.runtime
                if path.startswith(RUNTIME_PREFIX)
                else None
            )
            client = scope.get("client") or (None, None)
            if allowed is not None and not peer_allowed(client[0], allowed):
                await _refuse(scope, send, client[0])
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send, host: str | None) -> None:
    body = (
        f"fedkd: the SuperLink's Control and Runtime APIs accept requests only from allowed addresses; "
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
    parser = argparse.ArgumentParser(prog="python -m server.deploy.control_gate")
    parser.add_argument("--control-from", action="append", default=[], metavar="CIDR")
    args = parser.parse_args(ours)
    try:
        control = parse_networks(args.control_from or LOOPBACK)
        runtime = parse_networks([*LOOPBACK, *_own_address(flower_args)])
    except ValueError as err:
        parser.exit(2, f"fedkd: {err}\n")
    if os.environ.get("FLWR_INTERNAL_GRPC_CONTROL_API") == "1":
        parser.exit(
            2, "fedkd: FLWR_INTERNAL_GRPC_CONTROL_API=1 opens an ungated gRPC Control API; unset it\n"
        )
    import flwr.superlink.main as superlink_main

    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")  # the module, not its function
    create_app, serve = superlink_main.create_app, cli.uvicorn.run

    def gated_create_app(*a, **kw):  # Flower imports create_app from this module at call time
        return ControlGate(create_app(*a, **kw), control, runtime)

    def serve_peer_addresses(*a, **kw):
        # uvicorn's proxy-header middleware would put whatever X-Forwarded-For a trusted peer
        # (127.0.0.1 by default) sends in place of the TCP peer the gate decides on: it stays off
        return serve(*a, **{**kw, "proxy_headers": False})

    superlink_main.create_app, cli.uvicorn.run = gated_create_app, serve_peer_addresses
    sys.argv = ["flower-superlink", *flower_args]
    cli.flower_superlink()


def _own_address(flower_args: list[str]) -> list[str]:
    """The ``--host`` the SuperLink binds, when it is one IP address: Flower's SuperExec connects
    to the Runtime API there. Wildcards (0.0.0.0, ::) make it connect over loopback instead."""
    if "--host" not in flower_args or flower_args.index("--host") + 1 >= len(flower_args):
        return []
    host = flower_args[flower_args.index("--host") + 1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []  # a name: Flower resolves it; use --control-from for its address
    return [] if address.is_unspecified else [host]


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our options, Flower's options) around the first ``--``."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


if __name__ == "__main__":
    main()
