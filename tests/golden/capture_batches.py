#!/usr/bin/env python3
"""Capture real client record batches for tests/it/records.rs.

Starts a Tansu broker (memory storage) behind a small TCP relay, produces a
few records with confluent-kafka (librdkafka) and kafka-python for every
compression type, and saves:

  tests/golden/batches/<client>_<codec>.bin          the batch as the client
                                                     sent it (from the relay)
  tests/golden/batches/<client>_<codec>_large.bin    same, first record 100 KiB
  tests/golden/batches/variant_<what>.bin            a captured batch re-framed
                                                     by the reference libraries
                                                     (liblz4 via python-lz4,
                                                     zlib) with the frame
                                                     options clients may use

It then fetches every topic back from the broker with a raw Fetch v4 request
and checks the broker returns the same bytes (only baseOffset and
partitionLeaderEpoch, which the broker assigns and the CRC does not cover,
may differ). Differences are printed and make the script exit non-zero.

Usage: python3 tests/golden/capture_batches.py [--port 39311]
Needs: ~/.cargo/bin/tansu, confluent-kafka, kafka-python, python-snappy, lz4,
zstandard. The broker and relay are stopped before the script exits.
"""

import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from kafkawire import crc32c  # noqa: E402  (one CRC-32C for every test script)

OUT = os.path.join(HERE, "batches")
TANSU = os.path.expanduser("~/.cargo/bin/tansu")
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def find_batches(blob):
    """Every v2 record batch inside blob, found by its CRC: a position whose
    magic is 2, whose length fits, and whose CRC-32C matches."""
    found = []
    i = 0
    while i + 61 <= len(blob):
        if blob[i + 16] == 2:
            (length,) = struct.unpack(">i", blob[i + 8:i + 12])
            end = i + 12 + length
            if 49 <= length and end <= len(blob):
                (crc,) = struct.unpack(">I", blob[i + 17:i + 21])
                if crc32c(blob[i + 21:end]) == crc:
                    found.append(bytes(blob[i:end]))
                    i = end
                    continue
        i += 1
    return found


# --- relay: client <-> relay <-> broker, recording Produce requests --------
class Relay:
    def __init__(self, listen_port, broker_port):
        self.broker_port = broker_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(16)
        self.produce_requests = []
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(c,), daemon=True).start()

    def _pipe(self, client):
        broker = socket.create_connection(("127.0.0.1", self.broker_port))
        pending = b""
        try:
            while not self.stop:
                r, _, _ = select.select([client, broker], [], [], 0.2)
                for s in r:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    if s is client:
                        broker.sendall(data)
                        pending += data
                        while len(pending) >= 4:
                            (size,) = struct.unpack(">i", pending[:4])
                            if len(pending) < 4 + size:
                                break
                            frame, pending = pending[4:4 + size], pending[4 + size:]
                            (api_key,) = struct.unpack(">h", frame[:2])
                            if api_key == 0:
                                with self.lock:
                                    self.produce_requests.append(frame)
                    else:
                        client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            broker.close()

    def close(self):
        self.stop = True
        self.sock.close()


# --- raw Fetch v4 ------------------------------------------------------------
def fetch_v4(port, topic, offset=0):
    body = struct.pack(">iiiib", -1, 500, 1, 4 << 20, 0)
    t = topic.encode()
    body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, 4 << 20)
    cid = b"kpr-capture"
    header = struct.pack(">hhih", 1, 4, 7, len(cid)) + cid
    req = header + body
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack(">i", len(req)) + req)

    def recv(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError("broker closed the connection")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", recv(4))
    resp = recv(size)
    s.close()
    pos = 4 + 4  # correlation id, throttle time
    (ntopics,) = struct.unpack(">i", resp[pos:pos + 4]); pos += 4
    assert ntopics == 1
    (tl,) = struct.unpack(">h", resp[pos:pos + 2]); pos += 2 + tl
    (nparts,) = struct.unpack(">i", resp[pos:pos + 4]); pos += 4
    assert nparts == 1
    partition, error, hw, lso = struct.unpack(">ihqq", resp[pos:pos + 22]); pos += 22
    if error:
        raise RuntimeError(f"fetch {topic}: error code {error}")
    (naborted,) = struct.unpack(">i", resp[pos:pos + 4]); pos += 4
    pos += max(naborted, 0) * 16
    (rl,) = struct.unpack(">i", resp[pos:pos + 4]); pos += 4
    return resp[pos:pos + max(rl, 0)]


def split_batches(records):
    out = []
    pos = 0
    while pos + 12 <= len(records):
        (length,) = struct.unpack(">i", records[pos + 8:pos + 12])
        if pos + 12 + length > len(records):
            break
        out.append(records[pos:pos + 12 + length])
        pos += 12 + length
    return out


# --- producers ---------------------------------------------------------------
def records_for(large):
    """Compressible records with keys, values and headers; a null key and a
    null value among them."""
    recs = []
    first = b"L" * (100 * 1024) if large else b"first value " * 8
    recs.append((b"key-0", first, [("h1", b"v1"), ("h2", b"")]))
    recs.append((None, b"second value " * 8, [("only", b"header")]))
    recs.append((b"key-2", None, []))
    recs.append((b"key-3", b"fourth value " * 8, [("h1", b"again")]))
    return recs


def produce_confluent(bootstrap, topic, codec, large):
    from confluent_kafka import Producer
    p = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 200,
        "message.max.bytes": 4 << 20,
    })
    for k, v, h in records_for(large):
        p.produce(topic, key=k, value=v, headers=h, partition=0)
    left = p.flush(30)
    if left:
        raise RuntimeError(f"confluent {topic}: {left} messages not delivered")


def produce_kafka_python(bootstrap, topic, codec, large):
    from kafka import KafkaProducer
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if codec == "none" else codec,
        linger_ms=200,
        max_request_size=4 << 20,
    )
    for k, v, h in records_for(large):
        p.send(topic, key=k, value=v, headers=h, partition=0)
    p.flush(30)
    p.close()


CLIENTS = {"confluent": produce_confluent, "kafkapython": produce_kafka_python}


# --- frame variants ------------------------------------------------------------
def reframe(batch, codec_bits, compressed):
    """batch with its records replaced by `compressed`, codec bits set,
    batchLength and CRC recomputed."""
    (attrs,) = struct.unpack(">h", batch[21:23])
    attrs = (attrs & ~7) | codec_bits
    body = struct.pack(">h", attrs) + batch[23:61] + compressed
    return (batch[:8] + struct.pack(">i", len(body) + 9) + batch[12:17]
            + struct.pack(">I", crc32c(body)) + body)


def write_variants():
    """LZ4 frames with the options librdkafka, python-lz4 and the lz4 CLI
    may set (linked blocks, block and content checksums, content size,
    larger blocks, several blocks), and gzip with two members, all written
    by the reference C libraries around the records of a captured batch."""
    import gzip
    import lz4.frame as lz4f
    src = open(os.path.join(OUT, "confluent_lz4_large.bin"), "rb").read()
    plain = lz4f.decompress(src[61:])
    variants = {
        "lz4_linked_checksums": lz4f.compress(plain, block_linked=True, block_checksum=True,
                                              content_checksum=True, store_size=True),
        "lz4_independent_checksums": lz4f.compress(plain, block_linked=False, block_checksum=True,
                                                   content_checksum=True, store_size=False),
        "lz4_4mb_blocks": lz4f.compress(plain, block_size=lz4f.BLOCKSIZE_MAX4MB, store_size=True,
                                        compression_level=9),
    }
    half = len(plain) // 2
    variants["gzip_two_members"] = gzip.compress(plain[:half]) + gzip.compress(plain[half:])
    for name, data in variants.items():
        bits = 1 if name.startswith("gzip") else 3
        with open(os.path.join(OUT, f"variant_{name}.bin"), "wb") as f:
            f.write(reframe(src, bits, data))
        print(f"variant_{name}: {len(data)} compressed bytes")


def start_tansu(port, advertised_port=None):
    """A Tansu broker with memory storage on 127.0.0.1:port (advertising
    advertised_port, default port), once it accepts connections."""
    broker = subprocess.Popen(
        [TANSU, "broker",
         "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port or port}",
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.1)
    return broker


def stop_tansu(broker):
    """Stop a broker start_tansu started (SIGTERM, then SIGKILL after 10 s)."""
    broker.send_signal(signal.SIGTERM)
    try:
        broker.wait(10)
    except subprocess.TimeoutExpired:
        broker.kill()
        broker.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=39311, help="relay port (broker uses port+1)")
    args = ap.parse_args()
    relay_port, broker_port = args.port, args.port + 1
    os.makedirs(OUT, exist_ok=True)
    broker = start_tansu(broker_port, advertised_port=relay_port)
    relay = None
    failures = 0
    try:
        relay = Relay(relay_port, broker_port)
        bootstrap = f"127.0.0.1:{relay_port}"
        for client, produce in CLIENTS.items():
            for codec in CODECS:
                for large in (False, True):
                    if large and codec == "none":
                        continue
                    name = f"{client}_{codec}" + ("_large" if large else "")
                    topic = "cap-" + name.replace("_", "-")
                    subprocess.run([TANSU, "topic", "create", topic, "--partitions", "1",
                                    "--broker", f"tcp://127.0.0.1:{broker_port}"],
                                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    with relay.lock:
                        relay.produce_requests.clear()
                    produce(bootstrap, topic, codec, large)
                    time.sleep(0.3)
                    with relay.lock:
                        sent = [b for f in relay.produce_requests for b in find_batches(f)]
                    fetched = split_batches(fetch_v4(broker_port, topic))
                    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
                        f.write(b"".join(sent))
                    same = len(sent) == len(fetched) and all(
                        s[8:12] == g[8:12] and s[16:] == g[16:] for s, g in zip(sent, fetched))
                    attrs = [struct.unpack(">h", b[21:23])[0] for b in sent]
                    print(f"{name}: {len(sent)} batch(es) sent, {sum(len(b) for b in sent)} bytes, "
                          f"attributes {attrs}, fetched {len(fetched)}; broker bytes "
                          f"{'identical' if same else 'DIFFER'}")
                    if not same:
                        failures += 1
                        with open(os.path.join(OUT, name + ".fetched.bin"), "wb") as f:
                            f.write(b"".join(fetched))
    finally:
        if relay:
            relay.close()
        stop_tansu(broker)
    write_variants()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
