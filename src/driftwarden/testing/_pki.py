"""Certificates and keys for a throwaway test control plane, made with the openssl CLI."""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "issue_client_cert", "make_pki"]

# ECDSA P-256 keys take milliseconds to generate; Go, OpenSSL and urllib3 accept them.
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    """Paths of every PEM file the control plane uses."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args[:2])} failed in {cwd} (exit {result.returncode}): "
            f"{result.stderr.strip()}"
        )


def _sign(folder: Path, name: str, subject: str, extensions: list[str]) -> None:
    """Write <name>.key/<name>.crt in folder: a P-256 key and a CA-signed certificate."""
    ext_file = folder / f"{name}.ext"
    ext_file.write_text("[v3]\n" + "\n".join(extensions) + "\n", encoding="ascii")
    _openssl(
        "req",
        "-new",
        *_EC_KEY,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=folder,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "0x" + secrets.token_hex(16),
        "-days",
        "365",
        "-extfile",
        ext_file.name,
        "-extensions",
        "v3",
        "-out",
        f"{name}.crt",
        cwd=folder,
    )
    (folder / f"{name}.csr").unlink()
    ext_file.unlink()


def make_pki(
    folder: Path,
    *,
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    dns_names: tuple[str, ...] = ("localhost",),
    admin_user: str = "driftwarden-admin",
) -> Pki:
    """Return a fresh CA, API-server serving cert, system:masters client cert and SA key pair in folder."""
    if shutil.which("openssl") is None:
        raise RuntimeError(
            "the openssl command is not on PATH; the test control plane needs it to make "
            "certificates (Debian: apt-get install openssl)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    _openssl(
        "req",
        "-x509",
        *_EC_KEY,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=driftwarden-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=folder,
    )
    for ip in ip_addresses:
        ipaddress.ip_address(ip)  # reject a typo before openssl silently writes a bad SAN
    sans = [f"IP:{ip}" for ip in ip_addresses] + [f"DNS:{name}" for name in dns_names]
    _sign(
        folder,
        "apiserver",
        "/CN=kube-apiserver",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(sans),
        ],
    )
    # O=system:masters is bound to cluster-admin by the API server's bootstrap RBAC.
    _sign(
        folder,
        "admin",
        f"/O=system:masters/CN={admin_user}",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
    )
    # Service-account tokens are signed with RS256, the algorithm every client expects.
    _openssl(
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "sa.key",
        cwd=folder,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return Pki(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        admin_cert=folder / "admin.crt",
        admin_key=folder / "admin.key",
        service_account_key=folder / "sa.key",
        service_account_pub=folder / "sa.pub",
    )


def issue_client_cert(pki: Pki, folder: Path, name: str, subject: str) -> tuple[Path, Path]:
    """Return (cert, key) of a new client certificate for subject (e.g. "/O=system:nodes/CN=..."), signed by pki's CA."""
    folder.mkdir(parents=True, exist_ok=True)
    # _sign expects the CA beside the new files; link it in for the signature only.
    links = []
    for source, link_name in ((pki.ca_cert, "ca.crt"), (pki.ca_key, "ca.key")):
        link = folder / link_name
        if not link.exists():
            link.symlink_to(source)
            links.append(link)
    try:
        _sign(
            folder,
            name,
            subject,
            [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=clientAuth",
            ],
        )
    finally:
        for link in links:
            link.unlink()
    key = folder / f"{name}.key"
    key.chmod(0o600)
    return folder / f"{name}.crt", key
