#!/usr/bin/env python3
"""Recording TCP relay for capturing golden Kafka frames (a dev tool).

    record_relay.py relay  --listen 127.0.0.1:19093 --broker 127.0.0.1:19092 --out /tmp/capture
    record_relay.py select --capture /tmp/capture --client kafka-python --golden tests/golden

`relay` accepts clients, connects each one to the broker, and copies bytes
both ways unchanged. On the side it splits each direction into Kafka frames
(4-byte big-endian size prefix) and saves every frame, without its size
prefix, to the capture directory, with one JSON line per frame in
`frames.jsonl`. A request's api key and version come from its header; a
response is matched to its request FIFO per connection (checked against the
correlation id, so a Produce with acks=0, which gets no response, is skipped
rather than shifting every later match).

Start the broker so that it advertises the relay's address, or clients will
go around the relay after their first Metadata request.

`select` copies a representative set out of a capture into
`<golden>/<client>/`: for every distinct (api key, version) seen, up to
`--per-version` request/response pairs (the first, the largest request, the
largest response, then other sizes), skipping frames larger than
`--max-bytes` and APIs the proxy does not decode (not in `API_NAMES`). Files are named `<Api>_v<version>_<request|response>_<n>.bin`
(a request and its response share `n`) and listed in `<golden>/index.tsv`.
"""

import argparse
import collections
import json
import os
import shutil
import socket
import struct
import sys
import threading

API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn",
    28: "TxnOffsetCommit", 32: "DescribeConfigs", 36: "SaslAuthenticate",
    37: "CreatePartitions", 42: "DeleteGroups", 44: "IncrementalAlterConfigs",
    47: "OffsetDelete", 60: "DescribeCluster", 61: "DescribeProducers",
    75: "DescribeTopicPartitions",
}


def api_name(key):
    return API_NAMES.get(key, "ApiKey%d" % key)


class Recorder:
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.seq = 0
        os.makedirs(out, exist_ok=True)
        self.index = open(os.path.join(out, "frames.jsonl"), "a")

    def save(self, conn, kind, frame, api_key, api_version, correlation_id, note=None):
        with self.lock:
            self.seq += 1
            name = "%06d_c%d_%s.bin" % (self.seq, conn, kind)
            with open(os.path.join(self.out, name), "wb") as f:
                f.write(frame)
            entry = {"seq": self.seq, "conn": conn, "kind": kind, "file": name,
                     "api_key": api_key, "api_version": api_version,
                     "correlation_id": correlation_id, "size": len(frame)}
            if note:
                entry["note"] = note
            self.index.write(json.dumps(entry) + "\n")
            self.index.flush()


class Splitter:
    """Accumulates a byte stream and yields whole frames (size prefix removed)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (size,) = struct.unpack(">i", self.buf[:4])
            if size < 0:
                raise ValueError("negative frame size %d" % size)
            if len(self.buf) < 4 + size:
                break
            frames.append(bytes(self.buf[4:4 + size]))
            del self.buf[:4 + size]
        return frames


def relay_connection(conn_id, client, broker_addr, rec):
    try:
        upstream = socket.create_connection(broker_addr)
    except OSError as e:
        print("conn %d: cannot reach broker: %s" % (conn_id, e), file=sys.stderr)
        client.close()
        return
    pending = collections.deque()  # (api_key, api_version, correlation_id)
    cond = threading.Condition()

    def pump(src, dst, kind):
        splitter = Splitter()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # Requests are recorded before they are forwarded, so that the
                # response cannot arrive before its request is pending.
                if kind == "response":
                    dst.sendall(data)
                for frame in splitter.feed(data):
                    if kind == "request":
                        if len(frame) < 8:
                            rec.save(conn_id, kind, frame, None, None, None, "short request")
                            continue
                        key, ver, corr = struct.unpack(">hhi", frame[:8])
                        with cond:
                            pending.append((key, ver, corr))
                        rec.save(conn_id, kind, frame, key, ver, corr)
                    else:
                        corr = struct.unpack(">i", frame[:4])[0] if len(frame) >= 4 else None
                        match = None
                        with cond:
                            # FIFO; requests that got no response (acks=0) are dropped.
                            while pending:
                                cand = pending.popleft()
                                if cand[2] == corr:
                                    match = cand
                                    break
                        if match is None:
                            rec.save(conn_id, kind, frame, None, None, corr, "unmatched response")
                        else:
                            rec.save(conn_id, kind, frame, match[0], match[1], corr)
                if kind == "request":
                    dst.sendall(data)
        except (OSError, ValueError) as e:
            print("conn %d %s: %s" % (conn_id, kind, e), file=sys.stderr)
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    threads = [
        threading.Thread(target=pump, args=(client, upstream, "request"), daemon=True),
        threading.Thread(target=pump, args=(upstream, client, "response"), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def cmd_relay(args):
    rec = Recorder(args.out)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(parse_addr(args.listen))
    listener.listen(64)
    print("relaying %s -> %s, recording to %s" % (args.listen, args.broker, args.out), flush=True)
    conn_id = 0
    while True:
        client, _ = listener.accept()
        conn_id += 1
        threading.Thread(target=relay_connection, args=(conn_id, client, parse_addr(args.broker), rec),
                         daemon=True).start()


def cmd_select(args):
    entries = [json.loads(line) for line in open(os.path.join(args.capture, "frames.jsonl"))]
    # Requests by (conn, correlation id), to pair with responses.
    requests = {}
    for e in entries:
        if e["kind"] == "request" and e["api_key"] is not None:
            requests[(e["conn"], e["correlation_id"])] = e
    candidates = collections.defaultdict(list)
    for e in entries:
        if e["kind"] != "response" or e["api_key"] is None:
            continue
        req = requests.get((e["conn"], e["correlation_id"]))
        if req is None or max(req["size"], e["size"]) > args.max_bytes:
            continue
        if e["api_key"] not in API_NAMES:
            continue  # the proxy forwards these as bytes and never decodes them
        candidates[(e["api_key"], e["api_version"])].append((req, e))
    # Per api/version: the first pair seen, then the pairs with the largest
    # request and the largest response (the ones with topics, partitions and
    # records in them), then others of sizes not yet kept.
    chosen = {}
    for key, pairs in candidates.items():
        order = [pairs[0],
                 max(pairs, key=lambda p: p[0]["size"]),
                 max(pairs, key=lambda p: p[1]["size"])] + pairs
        kept, shapes = [], set()
        for pair in order:
            shape = (pair[0]["size"], pair[1]["size"])
            if shape not in shapes and len(kept) < args.per_version:
                kept.append(pair)
                shapes.add(shape)
        chosen[key] = kept
    outdir = os.path.join(args.golden, args.client)
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    index_path = os.path.join(args.golden, "index.tsv")
    rows = []
    if os.path.exists(index_path):
        with open(index_path) as f:
            rows = [l.rstrip("\n").split("\t") for l in f if l.strip() and not l.startswith("#")]
        rows = [r for r in rows if r[0] != args.client]
    for (key, ver), pairs in sorted(chosen.items()):
        for n, (req, resp) in enumerate(pairs):
            for e in (req, resp):
                name = "%s_v%d_%s_%d.bin" % (api_name(key), ver, e["kind"], n)
                shutil.copyfile(os.path.join(args.capture, e["file"]), os.path.join(outdir, name))
                rows.append([args.client, "%s/%s" % (args.client, name), str(key), str(ver), e["kind"],
                             str(e["correlation_id"]), str(e["size"])])
    rows.sort(key=lambda r: (r[0], int(r[2]), int(r[3]), r[1]))
    with open(index_path, "w") as f:
        f.write("# client\tfile\tapi_key\tapi_version\tkind\tcorrelation_id\tsize\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print("%s: %d api/version pairs, %d files" % (args.client, len(chosen),
                                                  2 * sum(len(p) for p in chosen.values())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--listen", required=True)
    r.add_argument("--broker", required=True)
    r.add_argument("--out", required=True)
    s = sub.add_parser("select")
    s.add_argument("--capture", required=True)
    s.add_argument("--client", required=True)
    s.add_argument("--golden", required=True)
    s.add_argument("--per-version", type=int, default=3)
    s.add_argument("--max-bytes", type=int, default=16384)
    args = p.parse_args()
    {"relay": cmd_relay, "select": cmd_select}[args.cmd](args)


if __name__ == "__main__":
    main()
