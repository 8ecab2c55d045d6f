"""`fedkd deploy ...`: credentials and the Flower Deployment Engine's pieces (docs/deploy.md)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from fedkd.errors import ConfigError


@click.group()
def deploy() -> None:
    """Flower Deployment Engine: credentials, SuperLink, SuperNodes, connection (docs/deploy.md)."""


@deploy.command("credentials")
@click.option(
    "--out", type=str, default="deploy/credentials", show_default=True, help="Folder for the credentials."
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("localhost", "127.0.0.1"),
    show_default=True,
    help="Names/IPs the SuperLink is reached at (repeat).",
)
@click.option("--nodes", type=int, default=2, show_default=True, help="SuperNode key pairs to make.")
@click.option(
    "--force", is_flag=True, help="Replace existing credentials (registered nodes must re-register)."
)
def deploy_credentials(out: str, hosts: tuple[str, ...], nodes: int, force: bool) -> None:
    """A test CA, the SuperLink's TLS certificate and one auth key pair per SuperNode.

    Folders are 0700 and keys 0600; the CA's private key goes to OUT/ca/, apart from OUT/certs/
    (what SuperNodes receive). Existing credentials are never replaced without --force."""
    from experiments.deploy import make_certificates, make_node_keys

    if nodes < 1:
        raise ConfigError(f"--nodes={nodes} is invalid; allowed: >= 1")
    existing = [
        p for p in ("certs", "keys", "ca") if (Path(out) / p).exists() and any((Path(out) / p).iterdir())
    ]
    if existing and not force:
        raise ConfigError(
            f"--out {out!r} already holds credentials ({existing[0]}/); allowed: another --out, or --force "
            "to replace them (nodes registered with the old keys must then be registered again)"
        )
    certs = make_certificates(Path(out) / "certs", list(hosts), ca_dir=Path(out) / "ca")
    keys = make_node_keys(Path(out) / "keys", nodes)
    click.echo(f"CA: {certs['ca']}  SuperLink cert/key: {certs['cert']}, {certs['key']}")
    for private, public in keys:
        click.echo(f"SuperNode key: {private} (register {public} with `flwr supernode register`)")


def _exec(cmd: list[str], print_only: bool) -> None:
    click.echo(shlex.join(cmd))
    if not print_only:
        os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
        os.execvp(cmd[0], cmd)


def _certs(certs: str | None, insecure: bool, where: str) -> Path | None:
    if insecure:
        click.echo(
            f"WARNING: --insecure: {where} traffic is unencrypted and SuperNodes are not "
            "authenticated; use it on loopback or a trusted lab network only",
            err=True,
        )
        return None
    if not certs:
        raise ConfigError("--certs DIR is required (from `fedkd deploy credentials`), or pass --insecure")
    folder = Path(certs)
    if not (folder / "ca.crt").is_file():
        raise ConfigError(f"--certs {certs!r} holds no ca.crt; make one with `fedkd deploy credentials`")
    return folder


@deploy.command("superlink")
@click.option("--certs", type=str, help="Folder with ca.crt, server.pem, server.key.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 for a network).")
@click.option(
    "--port",
    type=int,
    default=8000,
    show_default=True,
    help="The SuperLink's one HTTP port (Fleet, Control and Runtime APIs).",
)
@click.option(
    "--database", default="deploy/superlink.db", show_default=True, help="SuperLink state (SQLite file)."
)
@click.option("--no-node-auth", is_flag=True, help="Let any SuperNode connect (TLS still on).")
@click.option(
    "--control-from",
    multiple=True,
    metavar="CIDR",
    help="Networks allowed on the Control API (flwr run/ls/supernode register); repeat. "
    "Default: loopback (remote operators use an SSH tunnel); list 127.0.0.1/32 to keep it.",
)
@click.option("--insecure", is_flag=True, help="No TLS, no node authentication (loopback tests only).")
@click.option("--print", "print_only", is_flag=True, help="Print the command instead of running it.")
def deploy_superlink(certs, host, port, database, no_node_auth, control_from, insecure, print_only) -> None:
    """Start flower-superlink with TLS, SuperNode authentication and a Control API closed to outsiders."""
    from experiments.deploy import superlink_command
    from server.deploy.control_gate import parse_networks

    folder = _certs(certs, insecure, "SuperLink")
    try:
        parse_networks(control_from)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if host in ("0.0.0.0", "::"):
        click.echo(
            "fedkd: the Fleet API is open to the network; the Control API answers only "
            f"{', '.join(control_from) or 'loopback'}, the Runtime API only this host (docs/deploy.md)",
            err=True,
        )
    command = superlink_command(folder, host, port, Path(database), not no_node_auth, control_from)
    _exec(command, print_only)


@deploy.command("supernode")
@click.option("--superlink", required=True, help="HOST:PORT of the SuperLink.")
@click.option("--certs", type=str, help="Folder with the CA certificate ca.crt.")
@click.option("--key", type=str, help="This SuperNode's private key (from `fedkd deploy credentials`).")
@click.option("--partition-id", type=int, required=True, help="This device's client (0..num-partitions-1).")
@click.option("--num-partitions", type=int, required=True, help="Clients in the federation (num-clients).")
@click.option("--data-dir", default="", help="Where the dataset files are on this device.")
@click.option("--port", type=int, default=9094, show_default=True, help="This SuperNode's local API port.")
@click.option("--insecure", is_flag=True, help="No TLS (loopback tests only).")
@click.option("--print", "print_only", is_flag=True, help="Print the command instead of running it.")
def deploy_supernode(
    superlink, certs, key, partition_id, num_partitions, data_dir, port, insecure, print_only
):
    """Start flower-supernode for one device and one partition."""
    from experiments.deploy import supernode_command

    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"--partition-id={partition_id} is invalid; allowed: 0..{num_partitions - 1}")
    folder = _certs(certs, insecure, "SuperNode")
    if folder is not None and key is None:
        raise ConfigError("--key FILE is required with TLS (the SuperLink authenticates SuperNodes)")
    _exec(
        supernode_command(
            superlink, folder, Path(key) if key else None, partition_id, num_partitions, port, data_dir
        ),
        print_only,
    )


@deploy.command("connection")
@click.option("--name", default="fedkd-lab", show_default=True, help="Name to use in `flwr run . NAME`.")
@click.option(
    "--superlink",
    default="127.0.0.1:8000",
    show_default=True,
    help="HOST:PORT of the SuperLink's Control API.",
)
@click.option("--certs", type=str, help="Folder with ca.crt.")
@click.option("--insecure", is_flag=True, help="No TLS (loopback tests only).")
def deploy_connection(name, superlink, certs, insecure) -> None:
    """Write the SuperLink connection into $FLWR_HOME/config.toml (default ~/.flwr)."""
    from experiments.deploy import write_connection

    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    click.echo(f"wrote {write_connection(home, name, superlink, _certs(certs, insecure, 'Control API'))}")
