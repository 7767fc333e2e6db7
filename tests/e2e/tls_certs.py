"""Test certificates made with the `openssl` command line in a directory.

    make_certs(dir) -> Certs with paths (all PEM):
      ca, ca_key             the CA the proxy (and stunnel) trust
      server, server_key     CN/SAN localhost + IP 127.0.0.1, signed by ca
                             (server_key is PKCS#1 RSA: "BEGIN RSA PRIVATE KEY")
      server_ec, server_ec_key  the same names, EC key ("BEGIN EC PRIVATE KEY")
      client, client_key     a client certificate (CN=good-client) from ca (PKCS#8)
      elsewhere, elsewhere_key  a server certificate from ca for another host
                             (elsewhere.example)
      other_ca               a second CA
      other_client, other_client_key  a client certificate from other_ca

    Stunnel(run_dir, port, target, cert, key): stunnel4 terminating TLS in
    front of a plaintext broker (Tansu has no TLS listener of its own).
"""

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness


def _openssl(*args, cwd):
    out = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"openssl {' '.join(map(str, args))}: {out.stderr}"


@dataclass
class Certs:
    dir: Path

    def __getattr__(self, name):
        return str(self.dir / f"{name}.pem")


def _ca(d, name, cn):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={cn}", "-keyout", f"{name}_key.pem", "-out", f"{name}.pem", cwd=d)


def _signed(d, name, ca, subject, key_args, ext=None, key_format=None):
    """A key and a certificate `name` signed by CA `ca`."""
    _openssl("req", "-new", "-nodes", *key_args, "-subj", subject,
             "-keyout", f"{name}_key.pem", "-out", f"{name}.csr", cwd=d)
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}_key.pem",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem"]
    if ext:
        (d / f"{name}.ext").write_text(ext)
        args += ["-extfile", f"{name}.ext"]
    _openssl(*args, cwd=d)
    if key_format == "rsa-traditional":
        _openssl("rsa", "-in", f"{name}_key.pem", "-traditional", "-out", f"{name}_key.pem", cwd=d)
    elif key_format == "ec-traditional":
        _openssl("ec", "-in", f"{name}_key.pem", "-out", f"{name}_key.pem", cwd=d)


SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth\n")
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"


def server_cert(d, name, subject):
    """Another server certificate `name` (PEM, RSA) for localhost and
    127.0.0.1 from the CA of make_certs(d), with its own subject (a rotated
    certificate)."""
    _signed(Path(d), name, "ca", subject, ["-newkey", "rsa:2048"], SERVER_EXT)
    return Certs(Path(d))


def make_certs(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca", "kpr test CA")
    _ca(d, "other_ca", "kpr other CA")
    _signed(d, "server", "ca", "/CN=localhost", ["-newkey", "rsa:2048"], SERVER_EXT,
            key_format="rsa-traditional")
    _signed(d, "server_ec", "ca", "/CN=localhost",
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"], SERVER_EXT,
            key_format="ec-traditional")
    _signed(d, "elsewhere", "ca", "/CN=elsewhere.example", ["-newkey", "rsa:2048"],
            "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n")
    _signed(d, "client", "ca", "/CN=good-client/O=kpr", ["-newkey", "rsa:2048"], CLIENT_EXT)
    _signed(d, "other_client", "other_ca", "/CN=bad-client", ["-newkey", "rsa:2048"], CLIENT_EXT)
    return Certs(d)


class Stunnel:
    """stunnel4 terminating TLS on `port` with certificate `cert` (and its
    key) in front of the broker at `target`."""

    def __init__(self, run_dir, port, target, cert, key):
        self.port = port
        conf = run_dir / f"stunnel-{port}.conf"
        conf.write_text(
            "foreground = yes\npid =\n"
            f"output = {run_dir / f'stunnel-{port}.log'}\n"
            f"[kafka]\naccept = 127.0.0.1:{port}\nconnect = {target}\n"
            f"cert = {cert}\nkey = {key}\n")
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            pytest.fail(f"stunnel4 not found: {harness.INSTALL_HINT}")
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not harness.port_open(port):
            assert time.monotonic() < deadline and self.proc.poll() is None, "stunnel4 did not start"
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
