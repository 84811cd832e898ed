"""Throwaway certificates for TLS tests, made with the openssl CLI: a CA, a broker certificate it
signs (for localhost and 127.0.0.1), and an unrelated CA that must be refused. EC P-256, which
both CPython's OpenSSL and MicroPython's mbedTLS verify."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # PEM of the CA that signed the broker's certificate
    other_ca: Path  # PEM of a CA that signed nothing here
    server_cert: Path
    server_key: Path

    def mosquitto_listener(self, port: int) -> str:
        """mosquitto.conf lines for a TLS listener on port (append to Mosquitto's config)."""
        return (
            f"listener {port} 127.0.0.1\n"
            f"cafile {self.ca}\ncertfile {self.server_cert}\nkeyfile {self.server_key}\n"
        )


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is needed for TLS tests: apt-get install openssl")
    subprocess.run([binary, *args], check=True, capture_output=True, timeout=30)


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN=Neoterra test {name}")
    return cert, key


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _new_ca(directory, "ca")
    other_ca, _ = _new_ca(directory, "other-ca")
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.crt"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    extensions = directory / "broker.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return Certificates(ca, other_ca, cert, key)


__all__ = ["Certificates", "make_certificates"]
