"""Key material for a secure Flower deployment, made with the `cryptography` package: a CA, a TLS certificate for
the SuperLink signed by it, and EC key pairs (OpenSSH format) that identify SuperNodes.

    ca.pem / ca.key           the run's certificate authority (every SuperNode and the flwr CLI trust ca.pem)
    server.pem / server.key   the SuperLink's certificate for the given host names and IP addresses
    <name>.key / <name>.pub   a SuperNode's key pair: flower-supernode --auth-supernode-private-key <name>.key,
                              and `flwr supernode register <name>.pub` on a SuperLink started with
                              --enable-supernode-auth
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 7  # made for one run


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, fmt=serialization.PrivateFormat.PKCS8) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    path.chmod(0o600)


def _certificate(subject: str, key, issuer: x509.Name, signer, ca: bool, names: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        alt = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certificates(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A CA and a server certificate for `names` (IP addresses or DNS names) in `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedKSeed local CA")])
    ca = _certificate("FedKSeed local CA", ca_key, ca_name, ca_key, True, [])
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _certificate(names[0], server_key, ca_name, ca_key, False, list(names))
    paths = {name: directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")}
    paths["ca.pem"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, paths["ca.key"])
    paths["server.pem"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, paths["server.key"])
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's EC (NIST P-384) key pair in OpenSSH format: (private key path, public key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    _write_key(key, private, serialization.PrivateFormat.OpenSSH)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return private, public
