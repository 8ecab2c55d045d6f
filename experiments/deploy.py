"""Credentials for a Flower Deployment Engine federation: a local CA, a SuperLink TLS
certificate and one authentication key pair per SuperNode (Flower's node keys: EC, OpenSSH
format). For testing and small labs; production sites use their own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
import tomllib
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedkd.atomic import atomic_write


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    return atomic_write(
        path, lambda handle: handle.write(data), binary=True, mode=0o600 if private else 0o644
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedkd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def private_dir(path: Path) -> Path:
    """A folder only its owner can enter (0700), whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def make_certificates(
    out: str | Path, hosts: list[str], days: int = 365, ca_dir: str | Path | None = None
) -> dict[str, Path]:
    """ca.crt (the root the SuperNodes and the CLI trust), server.pem + server.key (the SuperLink)
    in ``out``; the CA's private key in ``ca_dir`` (default ``out/../ca``), never beside what
    SuperNodes are given."""
    out = private_dir(Path(out))
    ca_dir = private_dir(Path(ca_dir) if ca_dir else out.parent / "ca")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedkd test CA"))
        .issuer_name(_name("fedkd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_format = serialization.PrivateFormat.PKCS8
    return {
        "ca": _write(out / "ca.crt", ca_cert.public_bytes(pem)),
        "ca_key": _write(
            ca_dir / "ca.key", ca_key.private_bytes(pem, key_format, serialization.NoEncryption()), True
        ),
        "cert": _write(out / "server.pem", server_cert.public_bytes(pem)),
        "key": _write(
            out / "server.key", server_key.private_bytes(pem, key_format, serialization.NoEncryption()), True
        ),
    }


def make_node_keys(out: str | Path, count: int) -> list[tuple[Path, Path]]:
    """(private key, public key) per SuperNode, EC P-384 in OpenSSH format."""
    out = private_dir(Path(out))
    pairs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        pairs.append((_write(out / f"node-{i}", private, True), _write(out / f"node-{i}.pub", public)))
    return pairs


def superlink_command(
    certs: Path | None,
    host: str,
    port: int,
    database: Path,
    node_auth: bool,
    control_from: tuple[str, ...] = (),
) -> list[str]:
    """flower-superlink with TLS (unless ``certs`` is None) and SuperNode authentication, run
    behind :mod:`server.deploy.control_gate` so that its Control and Runtime APIs answer only loopback,
    the bind address and ``control_from``."""
    gate = [sys.executable, "-P", "-m", "server.deploy.control_gate"]  # -P: no shadowing from the cwd
    for network in control_from:
        gate += ["--control-from", network]
    cmd = [
        *gate,
        "--",
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(database),
        "--disable-runtime-dependency-installation",
    ]
    if certs is None:
        return [*cmd, "--insecure"]
    cmd += [
        "--ssl-ca-certfile",
        str(certs / "ca.crt"),
        "--ssl-certfile",
        str(certs / "server.pem"),
        "--ssl-keyfile",
        str(certs / "server.key"),
    ]
    return [*cmd, "--enable-supernode-auth"] if node_auth else cmd


def supernode_command(
    superlink: str,
    certs: Path | None,
    key: Path | None,
    partition_id: int,
    num_partitions: int,
    port: int,
    data_dir: str = "",
) -> list[str]:
    """flower-supernode for one device: its partition, its data folder, its auth key."""
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if data_dir:
        node_config += f' data-dir="{data_dir}"'
    cmd = ["flower-supernode", "--superlink", superlink, "--node-config", node_config, "--port", str(port)]
    if certs is None:
        return [*cmd, "--insecure"]
    cmd += ["--root-certificates", str(certs / "ca.crt")]
    return [*cmd, "--auth-supernode-private-key", str(key)] if key is not None else cmd


def write_connection(flwr_home: Path, name: str, address: str, certs: Path | None) -> Path:
    """Add a named SuperLink connection to $FLWR_HOME/config.toml (what `flwr run . NAME` uses)."""
    path = flwr_home / "config.toml"
    config = tomllib.loads(path.read_text()) if path.exists() else {}
    links = config.setdefault("superlink", {})
    entry: dict[str, object] = {"address": address}
    if certs is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str((certs / "ca.crt").resolve())
    links[name] = entry
    links.setdefault("default", name)
    return _write(path, tomli_w.dumps(config).encode())
