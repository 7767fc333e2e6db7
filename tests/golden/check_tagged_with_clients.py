#!/usr/bin/env python3
"""Feed batches tagged by kpr-proxy's tag_batch to a real broker and read
them back with real consumers (librdkafka via confluent-kafka, and
kafka-python), checking each record: key, value, the client's own headers,
and the appended kpr.vp header. This shows the re-compressed output of every
codec decodes in the clients, not only in our own decoder.

Usage:
  KPR_TAGGED_OUT=/tmp/kpr-tagged cargo test --test it records::write_tagged_batches_for_client_check
  python3 tests/golden/check_tagged_with_clients.py /tmp/kpr-tagged [--port 39321]

Starts its own Tansu broker (memory storage) and stops it before exiting.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture_batches import TANSU, records_for, split_batches, start_tansu, stop_tansu  # noqa: E402


def produce_raw(port, topic, batch):
    """One Produce v3 request (acks=1) carrying exactly `batch`."""
    t = topic.encode()
    body = struct.pack(">hhi", -1, 1, 10000)  # null transactional id, acks, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(batch)) + batch
    cid = b"kpr-check"
    req = struct.pack(">hhih", 0, 3, 11, len(cid)) + cid + body
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack(">i", len(req)) + req)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("broker closed the connection")
        buf += chunk
    s.close()
    resp = buf[8:]
    pos = 4
    (tl,) = struct.unpack(">h", resp[pos:pos + 2]); pos += 2 + tl
    pos += 4
    partition, error = struct.unpack(">ih", resp[pos:pos + 6])
    if error:
        raise RuntimeError(f"produce {topic}: error code {error}")


def expected(name):
    large = name.endswith("_large") or name.startswith("variant_")
    return [(k, v, h + [("kpr.vp", name.encode())]) for k, v, h in records_for(large)]


def consume_confluent(port, topic, n):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "kpr-check-" + topic,
                  "enable.auto.commit": False, "check.crcs": True, "auto.offset.reset": "earliest",
                  "fetch.message.max.bytes": 4 << 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            raise RuntimeError(f"confluent {topic}: {m.error()}")
        got.append((m.key(), m.value(), [(k, v if v is not None else b"") for k, v in (m.headers() or [])]))
    c.close()
    return got


def consume_kafka_python(port, topic, n):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False, check_crcs=True,
                      consumer_timeout_ms=20000, fetch_max_bytes=8 << 20, max_partition_fetch_bytes=4 << 20)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    for m in c:
        got.append((m.key, m.value, [(k, v if v is not None else b"") for k, v in m.headers]))
        if len(got) == n:
            break
    c.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=39321)
    args = ap.parse_args()
    port = args.port
    broker = start_tansu(port)
    failures = 0
    try:
        for f in sorted(os.listdir(args.dir)):
            if not f.endswith(".bin"):
                continue
            name = f[:-4]
            topic = "tagged-" + name.replace("_", "-")
            subprocess.run([TANSU, "topic", "create", topic, "--partitions", "1",
                            "--broker", f"tcp://127.0.0.1:{port}"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            data = open(os.path.join(args.dir, f), "rb").read()
            for batch in split_batches(data):
                produce_raw(port, topic, batch)
            want = expected(name)
            # librdkafka and kafka-python hand out an empty header value
            # for an empty one; the capture uses b"" for h2.
            for client, consume in (("confluent", consume_confluent), ("kafkapython", consume_kafka_python)):
                got = consume(port, topic, len(want))
                ok = got == want
                print(f"{name:<36} {client:<12} {len(got)} records {'ok' if ok else 'MISMATCH'}")
                if not ok:
                    failures += 1
                    for g, w in zip(got, want):
                        if g != w:
                            print("  got ", repr(g)[:200])
                            print("  want", repr(w)[:200])
                            break
    finally:
        stop_tansu(broker)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
