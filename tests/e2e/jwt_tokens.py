"""Signing keys, a JWKS file and signed JWTs made with the `openssl` command
line, for the OAUTHBEARER end-to-end tests: the proxy's
`listen.security.sasl.oauthbearer.jwks_path` points at `write_jwks(...)`
and clients send `make_token(...)`.

    key = SigningKey.generate(tmp_path, "rsa-1", "RS256")   # or "ES256"
    write_jwks(tmp_path / "jwks.json", [key])
    token = make_token(key, issuer="https://idp.test", audience="kafka",
                       subject="alice", lifetime_s=300)

Run as a script, it rewrites the golden tokens the proxy's unit tests check
(tests/golden/oauthbearer/), so the helper and the proxy's validator are
held to one another:

    python3 tests/e2e/jwt_tokens.py tests/golden/oauthbearer
"""

import base64
import json
import pathlib
import subprocess
import sys
import tempfile
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True,
                          check=True).stdout


def _der_ecdsa_to_raw(der, size=32):
    """An ECDSA signature from DER (SEQUENCE of INTEGER r, INTEGER s) to the
    r || s form JWS uses (RFC 7518 section 3.4)."""
    def read(buf, at, tag):
        assert buf[at] == tag, f"unexpected DER tag {buf[at]:#x} at {at}"
        length, at = buf[at + 1], at + 2
        if length & 0x80:  # long form: the next (length & 0x7f) bytes
            count = length & 0x7F
            length, at = int.from_bytes(buf[at:at + count], "big"), at + count
        return buf[at:at + length], at + length
    sequence, _ = read(der, 0, 0x30)
    r, at = read(sequence, 0, 0x02)
    s, _ = read(sequence, at, 0x02)
    return b"".join(int.from_bytes(n, "big").to_bytes(size, "big") for n in (r, s))


class SigningKey:
    """A private key in a PEM file, its `kid` and JWS algorithm."""

    def __init__(self, path, kid, alg):
        self.path, self.kid, self.alg = pathlib.Path(path), kid, alg

    @classmethod
    def generate(cls, directory, kid, alg="RS256"):
        path = pathlib.Path(directory) / f"{kid}.key.pem"
        if alg == "RS256":
            options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        elif alg == "ES256":
            options = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        else:
            raise ValueError(f"{alg}: only RS256 and ES256 keys are made here")
        _openssl("genpkey", *options, "-out", str(path))
        return cls(path, kid, alg)

    def jwk(self):
        """The public key as a JWKS entry."""
        if self.alg == "RS256":
            modulus = _openssl("rsa", "-in", str(self.path), "-noout", "-modulus")
            n = bytes.fromhex(modulus.decode().strip().split("=", 1)[1])
            text = _openssl("rsa", "-in", str(self.path), "-noout", "-text").decode()
            exponent = int(text.split("publicExponent:")[1].split()[0])
            e = exponent.to_bytes((exponent.bit_length() + 7) // 8, "big")
            return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": b64url(n), "e": b64url(e)}
        spki = _openssl("pkey", "-in", str(self.path), "-pubout", "-outform", "DER")
        point = spki[-65:]  # the uncompressed point ends the SPKI: 04 || x || y
        assert point[0] == 4, "expected an uncompressed P-256 point"
        return {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                "kid": self.kid, "x": b64url(point[1:33]), "y": b64url(point[33:])}

    def sign(self, data):
        signature = _openssl("dgst", "-sha256", "-sign", str(self.path), data=data)
        return signature if self.alg == "RS256" else _der_ecdsa_to_raw(signature)


def write_jwks(path, keys):
    path = pathlib.Path(path)
    path.write_text(json.dumps({"keys": [k.jwk() for k in keys]}))
    return path


def sign_jws(key, claims, header=None):
    """A compact JWS of `claims` signed by `key`; `header` overrides or adds
    header members (for example {"alg": "HS256"} or {"kid": "other"})."""
    head = {"alg": key.alg, "typ": "JWT", "kid": key.kid, **(header or {})}
    signing_input = (b64url(json.dumps(head, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(key.sign(signing_input.encode()))


def make_token(key, issuer, audience, subject="alice", lifetime_s=300,
               now=None, not_before_s=None, extra_claims=None, header=None):
    """A signed JWT: `exp` = now + lifetime_s (negative: already expired),
    `nbf` = now + not_before_s when given; `audience` a string or a list."""
    now = int(time.time()) if now is None else now
    claims = {"sub": subject, "iss": issuer, "aud": audience, "iat": now,
              "exp": now + lifetime_s}
    if not_before_s is not None:
        claims["nbf"] = now + not_before_s
    claims.update(extra_claims or {})
    return sign_jws(key, claims, header)


def write_golden(directory):
    """The files `auth::jwt` tests: a JWKS with an RS256 and an ES256 key and
    one token per key, valid from 2024-01-01 until 2100-01-01."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as keys_dir:
        keys = [SigningKey.generate(keys_dir, "golden-rsa", "RS256"),
                SigningKey.generate(keys_dir, "golden-ec", "ES256")]
        write_jwks(directory / "jwks.json", keys)
        for key in keys:
            token = make_token(key, "https://idp.golden", ["other", "kafka"],
                               subject=f"{key.alg.lower()}-user", now=1704067200,
                               lifetime_s=4102444800 - 1704067200)
            (directory / f"{key.alg.lower()}.jwt").write_text(token + "\n")


if __name__ == "__main__":
    write_golden(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/oauthbearer")
