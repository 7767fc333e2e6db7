"""Hostile clients cannot take the proxy's memory or its connection slots
(issue 11): memory is bounded by configuration, time by deadlines.

- stalled large frames: 8 sockets each send most of a frame and stall; the
  proxy stops reading them once listen.queued_max_request_bytes (Kafka's
  queued.max.request.bytes) is held, its RSS stays within baseline + budget,
  and a real client keeps producing meanwhile;
- slowloris: 200 sockets announce 100 MiB frames and send a byte a second;
  virtual memory stays bounded (no reservation of the announced size) and
  listen.frame_timeout_ms closes them;
- idle: listen.connections_max_idle_ms (Kafka's connections.max.idle.ms)
  closes sockets that send nothing, so they cannot hold every
  max_connections slot;
- SASL: a connection that does not authenticate within
  listen.handshake_timeout_ms is closed.
Each closed connection is counted in
kafka_proxy_connections_closed_total{reason=...}.
"""

import contextlib
import socket
import struct
import threading
import time

import clients
import kafkawire
from test_sasl_clients import USERS, authenticate_raw, sasl_proxy  # noqa: F401 (fixture)

MIB = 1 << 20


def proc_status(pid):
    """{field: kB} of /proc/PID/status's memory lines (VmRSS, VmHWM, VmSize)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.startswith("Vm"):
                out[name] = int(rest.split()[0])
    return out


def closed_metric(proxy, reason):
    return proxy.metrics().get(f'kafka_proxy_connections_closed_total{{reason="{reason}"}}', 0)


def produce_some(proxy, topic, count, tag):
    records = [(0, f"{tag}-{i}".encode(), b"v" * 100) for i in range(count)]
    return clients.produce_confluent(proxy.address, topic, records, timeout=30.0)


class StallingSender(threading.Thread):
    """Sends `prefix` then `body_len` bytes of body, as fast as the proxy
    reads them, then stalls with the socket open until `stop` is set."""

    def __init__(self, address, announced, body_len, stop):
        super().__init__(daemon=True)
        self.sock = kafkawire.connect(address, timeout=5)
        self.announced, self.body_len, self.stop = announced, body_len, stop
        self.sent = 0

    def run(self):
        chunk = b"\x00" * (256 * 1024)
        self.sock.settimeout(0.2)
        try:
            self.sock.sendall(struct.pack(">i", self.announced))
            while self.sent < self.body_len and not self.stop.is_set():
                piece = chunk[:self.body_len - self.sent]
                try:
                    self.sent += self.sock.send(piece)
                except socket.timeout:
                    continue
        except OSError:
            return
        self.stop.wait()


def test_stalled_large_frames_stay_within_the_request_budget(start_proxy, topic):
    budget = 64 * MIB
    frame = 64 * MIB  # the largest frame the budget allows (max_frame_bytes <= budget)
    proxy = start_proxy(metrics=True, extra={"listen": {
        "max_frame_bytes": frame, "queued_max_request_bytes": budget,
        "frame_timeout_ms": 60000}})
    name = topic(1)
    produce_some(proxy, name, 20, "warm-up")
    baseline = proc_status(proxy.process.pid)["VmRSS"] * 1024
    stop = threading.Event()
    attackers = [StallingSender(proxy.address, frame, frame - MIB, stop) for _ in range(8)]
    try:
        for a in attackers:
            a.start()
        # Give the attackers time to push what the proxy reads (on the old
        # proxy 8 x 63 MiB arrive in about a second).
        time.sleep(4)
        sent = sum(a.sent for a in attackers)
        during = time.monotonic()
        reports = produce_some(proxy, name, 200, "during-attack")
        produce_secs = time.monotonic() - during
        status = proc_status(proxy.process.pid)
        peak = status["VmHWM"] * 1024
        print(f"baseline RSS {baseline / MIB:.1f} MiB; attackers sent {sent / MIB:.0f} MiB; "
              f"RSS now {status['VmRSS'] / 1024:.1f} MiB, peak {peak / MIB:.1f} MiB, "
              f"budget {budget / MIB:.0f} MiB; 200 records delivered in {produce_secs:.1f} s")
        assert len(reports) == 200
        assert all(a.is_alive() for a in attackers), "an attacker's connection was closed early"
        slack = 48 * MIB
        assert peak <= baseline + budget + slack, (
            f"peak RSS {peak / MIB:.1f} MiB above baseline {baseline / MIB:.1f} + budget "
            f"{budget / MIB:.0f} + slack {slack / MIB:.0f} MiB")
    finally:
        stop.set()
        for a in attackers:
            a.sock.close()
            a.join(5)


def test_slowloris_frames_are_closed_by_the_frame_timeout(start_proxy):
    proxy = start_proxy(metrics=True, extra={"listen": {"frame_timeout_ms": 2000}})
    before = proc_status(proxy.process.pid)
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(kafkawire.connect(proxy.address, timeout=5)) for _ in range(200)]
        started = time.monotonic()
        for s in socks:
            s.sendall(struct.pack(">i", 100 * MIB) + b"\x00")
        open_socks = list(socks)
        closed_after = {}
        peak_vm = 0
        # A byte a second each; note when the proxy closes them.
        while open_socks and time.monotonic() - started < 12:
            time.sleep(1)
            peak_vm = max(peak_vm, proc_status(proxy.process.pid)["VmSize"])
            for s in list(open_socks):
                try:
                    s.sendall(b"\x00")
                    s.settimeout(0.001)
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except socket.timeout:
                    continue
                except OSError:
                    closed_after[s.fileno()] = time.monotonic() - started
                    open_socks.remove(s)
        grown = (peak_vm - before["VmSize"]) / 1024
        latest = max(closed_after.values(), default=None)
        print(f"VmSize {before['VmSize'] / 1024:.0f} MiB before, peak {peak_vm / 1024:.0f} MiB "
              f"(+{grown:.0f} MiB); {len(closed_after)} of 200 closed, the last after "
              f"{latest if latest is None else round(latest, 1)} s; {len(open_socks)} still open")
        assert not open_socks, f"{len(open_socks)} of 200 slowloris connections still open after 12 s"
        assert latest <= 6, f"the last slowloris connection closed {latest:.1f} s after starting (deadline 2 s)"
        assert grown < 512, f"VmSize grew by {grown:.0f} MiB for 200 announced 100 MiB frames"
    assert closed_metric(proxy, "frame_timeout") >= 200


def test_idle_connections_are_closed_and_free_their_slots(start_proxy, topic):
    limit = 100
    proxy = start_proxy(max_connections=limit, metrics=True,
                        extra={"listen": {"connections_max_idle_ms": 2000}})
    name = topic(1)
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(kafkawire.connect(proxy.address, timeout=5)) for _ in range(limit)]
        opened = time.monotonic()
        time.sleep(1)
        probe = kafkawire.connect(proxy.address, timeout=5)
        assert kafkawire.wait_closed(probe, timeout=3), "the limit of 100 connections is not in force"
        probe.close()
        for s in idle:
            left = max(0.1, opened + 8 - time.monotonic())
            assert kafkawire.wait_closed(s, timeout=left), "an idle connection was not closed within 8 s"
        print(f"100 idle connections closed {time.monotonic() - opened:.1f} s after opening "
              f"(connections_max_idle_ms 2000)")
        reports = produce_some(proxy, name, 50, "after-idle")
        assert len(reports) == 50
    assert closed_metric(proxy, "idle") >= limit


def test_sasl_connection_that_never_authenticates_is_closed(sasl_proxy):  # noqa: F811
    proxy = sasl_proxy(metrics=True, extra_listen={"handshake_timeout_ms": 2000})
    lurker = kafkawire.connect(proxy.address, timeout=5)
    # ApiVersions is answered before authenticating; nothing else follows.
    assert kafkawire.api_versions(lurker, 1, 1)[0] == 0
    opened = time.monotonic()
    authenticated, answer = authenticate_raw(proxy.address, "alice", USERS["alice"])
    assert answer[1] == 0, f"PLAIN login refused: {answer}"
    try:
        assert kafkawire.wait_closed(lurker, timeout=6), (
            "a connection that never authenticated is still open 6 s after handshake_timeout_ms (2 s)")
        took = time.monotonic() - opened
        print(f"unauthenticated connection closed after {took:.1f} s (handshake_timeout_ms 2000)")
        assert took >= 1.5, f"closed after {took:.1f} s, before the 2 s deadline"
        # The authenticated one is past the same deadline and still served.
        assert kafkawire.api_versions(authenticated, 1, 2)[0] == 0
    finally:
        lurker.close()
        authenticated.close()
    assert closed_metric(proxy, "handshake_timeout") >= 1
