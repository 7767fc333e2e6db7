#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, from tests/golden, in each target's
input format (see the target's module doc). Writes fuzz/seeds/<target>/;
`scripts/fuzz --seed` runs it, then minimizes seeds and findings into the
committed fuzz/corpus/<target>/ (cargo fuzz cmin)."""

import hashlib
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
GOLDEN = FUZZ.parent / "tests" / "golden"
SEEDS = FUZZ / "seeds"
BATCH_HEADER = 61


def write(target, data):
    out = SEEDS / target
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


def golden_frames():
    """(api_key, version, kind, frame) of every golden frame."""
    for line in (GOLDEN / "index.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        _, path, key, version, kind = line.split("\t")[:5]
        yield int(key), int(version), kind, (GOLDEN / path).read_bytes()


def bodies(kind, frame):
    """The frame's body after a header without, and with, an empty tag
    section: which one the API's version uses is the schema's to say, and
    the wrong guess does not decode."""
    if kind == "request":
        (client_id_len,) = struct.unpack(">h", frame[8:10])
        at = 10 + max(client_id_len, 0)
    else:
        at = 4
    yield frame[at:]
    if frame[at : at + 1] == b"\x00":
        yield frame[at + 1 :]


def main():
    frames = list(golden_frames())
    for key, version, kind, frame in frames:
        selector = struct.pack(">hh", key, version)
        if kind == "request":
            write("headers", b"\x00" + frame)
        else:
            write("headers", b"\x01" + selector + frame)
        for body in bodies(kind, frame):
            write("message_roundtrip", (b"\x00" if kind == "request" else b"\x01") + selector + body)
    small = [f for *_, f in frames if len(f) < 600]
    for pattern, group in ((0, small[:3]), (0x85, small[3:6]), (0x01, small[6:8])):
        write("frame_reader", bytes([pattern]) + b"".join(struct.pack(">i", len(f)) + f for f in group))
    for path in sorted((GOLDEN / "batches").glob("*.bin")):
        batch = path.read_bytes()
        write("record_batch", batch)
        records = batch[BATCH_HEADER:]
        codec = struct.unpack(">h", batch[21:23])[0] & 0x07
        write("compression", bytes([codec]) + records)
        if codec == 3:
            write("lz4_frame", records)
    for codec in range(5):
        write("compression", bytes([0x10 | codec]) + b"kpr-proxy " * 20)
    write("compression", b"\x1a" + bytes(range(256)))
    oauth = GOLDEN / "oauthbearer"
    for token in ("rs256.jwt", "es256.jwt"):
        write("auth", b"\x04" + (oauth / token).read_bytes().strip())
    write("auth", b"\x03" + (oauth / "jwks.json").read_bytes())
    write("auth", b"\x00" + b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    write("auth", b"\x00" + b"n=us=3Der=2C,r=rOprNGfwEbeRWgbNEkqO")
    write("auth", b"\x01" + b"n,a=us=2Cer,\x01auth=Bearer abc.def-ghi\x01traceId=42\x01\x01")
    write("auth", b"\x02" + b'{"status":"invalid_token","scope":"kafka","openid-configuration":"https://idp/.well-known"}')
    write("auth", b"\x02" + b"invalid_token\x01scope \"q\"\x01https://idp")
    write("auth", b'\x05{"alg":"ES256","kid":"fuzz"}\x00'
          b'{"sub":"alice","iss":"https://idp.golden","aud":["other","kafka"],"exp":4102444800,"nbf":1700000000.5}')


if __name__ == "__main__":
    main()
