"""A worker never waits on the network (issue 9, first "done means").

Kafka's own network layer never blocks a thread on one peer: a broker's
network threads and every Kafka client (NetworkClient over a Selector)
connect without blocking and bound the connect by a timeout, and a client
waiting for a coordinator look-up goes on serving its other requests. The
proxy must do the same: each client connection is owned by one worker
thread, and a request of one client whose upstream connect hangs, or whose
control look-up (here FindCoordinator) gets no answer, must not delay the
other clients of that worker. Issue 9 states it as: while the upstream
connect for one client hangs, 50 other clients on the same worker keep their
p99 latency within 2x of the no-stall run.

Setup: Tansu behind a relay (relay.py), which adds to every Metadata answer
two brokers at local listeners that never accept (their accept queue is
full, so the kernel drops further SYNs and connect() hangs). The proxy
deals connections to its workers round robin at accept
(src/net/event_loop.rs, `admit`), so the test opens every connection itself,
one at a time, and keeps only those whose turn falls on one worker: the 50
load clients and each stalling connection share it.

Each of the 50 clients sends Metadata v1 for a topic (answered upstream) in
a loop, REQUESTS requests per phase, and every latency is kept. Phases: a
baseline, a stall phase, and a second baseline. During the stall phase ONE
other client keeps triggering stalls, one after another:

- connect: DescribeConfigs for resource BROKER "<extra node>", which the
  proxy routes to that broker (config_route), so it connects to a listener
  that never accepts; connection_timeout_ms is 5 s. The two extra brokers
  take turns, so the proxy's memory of an unreachable address (500 ms)
  never answers the next stall at once.
- coordinator: OffsetCommit for a new group, so the proxy must look its
  coordinator up; the relay holds that FindCoordinator (for up to 5 s, or
  until the phase ends) before the broker sees it.

Asserted: the stall phase's p99 is at most twice the larger of the two
baselines' p99 (two baselines because these machines are shared and noisy),
and the stalling client gets a clear outcome: for connect, an error answer
or the connection closed after about connection_timeout_ms; for
coordinator, the OffsetCommit answer once the relay lets the look-up
through. Today's proxy fails the p99 check: a blocked worker holds every
request of its clients for up to the whole stall.
"""

import itertools
import os
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import clients
import harness
import kafkawire
from relay import Relay

CLIENTS = 50
# Per client and phase: 50 x 200 = 10,000 latencies, so the p99 is the
# 100th slowest and one scheduling hiccup does not move it.
REQUESTS = 200
WARM_UP_REQUESTS = 20
CONNECT_TIMEOUT_MS = 5000
HOLD_SECONDS = 5.0
# A phase that outlasts this is cut short: its latencies so far are kept
# (on a blocking proxy each stall adds seconds to every client's request).
PHASE_DEADLINE = 25.0
# How long after a stall starts the load begins: the proxy has read the
# request and is connecting (or waiting for the look-up) by then.
STALL_SETTLE = 0.3

API_DESCRIBE_CONFIGS = 32
RESOURCE_BROKER = 4


# ------------------------------------------------------------ connections

class Blackhole:
    """A local listener whose accept queue is full and never drained: the
    kernel drops further SYNs, so a connect() to it hangs until the
    connecting side gives up."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.queued = []
        while True:
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                s.close()
                break
            self.queued.append(s)
            assert len(self.queued) < 64, "the listener's accept queue never filled"

    def close(self):
        for s in self.queued + [self.listener]:
            s.close()


def proxy_workers(proxy):
    """The proxy's worker count: its threads named worker-N (else what
    src/main.rs computes, max(2, cores))."""
    if proxy.direct:
        return 1
    tasks = Path(f"/proc/{proxy.process.pid}/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    count = sum(1 for n in names if re.fullmatch(r"worker-\d+", n))
    return count or max(2, len(os.sched_getaffinity(0)))


class Dialer:
    """Opens every client connection of the test, one at a time, so the
    proxy accepts them in that order: the i-th goes to worker i % workers."""

    def __init__(self, address):
        self.address = address
        self.opened = 0
        self.workers = 1
        self.lock = threading.Lock()

    def open(self, timeout=60.0):
        with self.lock:
            sock = kafkawire.connect(self.address, timeout)
            self.opened += 1
            return sock

    def open_on(self, worker, timeout=60.0):
        """A connection the proxy gives to `worker`; the connections in
        between are opened and closed at once."""
        with self.lock:
            while self.opened % self.workers != worker:
                kafkawire.connect(self.address, timeout).close()
                self.opened += 1
            sock = kafkawire.connect(self.address, timeout)
            self.opened += 1
            return sock


# ------------------------------------------------------------ load

@dataclass
class Phase:
    name: str
    latencies: list = field(repr=False)
    expected: int
    seconds: float

    def quantile(self, q):
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    @property
    def p99(self):
        return self.quantile(0.99)

    def summary(self):
        return (f"{self.name}: p50 {self.quantile(0.5) * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, "
                f"max {max(self.latencies) * 1000:.1f} ms, {len(self.latencies)}/{self.expected} "
                f"requests in {self.seconds:.1f} s")


class LoadClient:
    """One connection sending Metadata v1 for a topic, one request at a time."""

    def __init__(self, sock, topic):
        self.sock = sock
        self.topic = topic
        self.correlation = 0

    def run(self, count, deadline, latencies, failures):
        try:
            for _ in range(count):
                if time.monotonic() > deadline:
                    return
                self.correlation += 1
                frame = kafkawire.metadata_v1_request(self.correlation, [self.topic])
                started = time.monotonic()
                payload = kafkawire.round_trip(self.sock, frame)
                latencies.append(time.monotonic() - started)
                _, _, _, topics = kafkawire.parse_metadata_v1_response(payload)
                assert topics[self.topic]["error"] == 0, f"Metadata error {topics[self.topic]['error']}"
        except Exception as e:  # noqa: BLE001 - reported by the phase
            failures.append(repr(e))


def run_phase(name, load, count):
    """Every client sends `count` requests at once; -> Phase."""
    latencies, failures = [], []
    deadline = time.monotonic() + PHASE_DEADLINE
    threads = [threading.Thread(target=c.run, args=(count, deadline, latencies, failures), daemon=True)
               for c in load]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(PHASE_DEADLINE + CONNECT_TIMEOUT_MS / 1000 + 30)
    assert not any(t.is_alive() for t in threads), f"{name}: load clients still waiting for answers"
    assert not failures, f"{name}: load clients failed: {failures[:3]}"
    return Phase(name, latencies, count * len(load), time.monotonic() - started)


# ------------------------------------------------------------ stalls

def describe_broker_config_request(correlation_id, version, broker_id):
    """DescribeConfigs v0-v3 for one BROKER resource, all its configs."""
    body = struct.pack(">ib", 1, RESOURCE_BROKER) + kafkawire._string(str(broker_id))
    body += struct.pack(">i", -1)  # configuration_keys: null (every config)
    if version >= 1:
        body += b"\x00"  # include_synonyms
    if version >= 3:
        body += b"\x00"  # include_documentation
    return kafkawire.request_frame(API_DESCRIBE_CONFIGS, version, correlation_id, body)


def outcome(sock, timeout, errors):
    """What the stalling client got: ("answer", errors(payload)),
    ("closed", None) or ("nothing", None), with the seconds it took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        payload = kafkawire.read_frame(sock)
    except socket.timeout:
        return "nothing", None, time.monotonic() - started
    except (OSError, kafkawire.WireError):
        payload = None
    elapsed = time.monotonic() - started
    if payload is None:
        return "closed", None, elapsed
    return "answer", errors(payload), elapsed


def describe_configs_errors(payload):
    """The resources' error codes of a DescribeConfigs v0-v3 answer."""
    r = kafkawire.Reader(payload)
    r.int32()  # correlation id
    r.int32()  # throttle_time_ms
    return [r.int16() for _ in range(min(r.int32(), 1))]


def offset_commit_errors(payload):
    return sorted(set(kafkawire.parse_offset_commit_v2_response(payload)[1].values()))


class ConnectStall:
    """DescribeConfigs routed to a broker whose address never accepts."""

    def __init__(self, nodes, version):
        self.nodes = itertools.cycle(nodes)
        self.version = version

    def once(self, sock, stop, started):
        sock.sendall(describe_broker_config_request(1, self.version, next(self.nodes)))
        started.set()
        return outcome(sock, CONNECT_TIMEOUT_MS / 1000 + 15, describe_configs_errors)


class CoordinatorStall:
    """OffsetCommit for a new group whose FindCoordinator the relay holds."""

    def __init__(self, relay, topic):
        self.relay = relay
        self.topic = topic

    def once(self, sock, stop, started):
        group = f"stall-{uuid.uuid4().hex[:8]}"
        hold = self.relay.hold_requests(kafkawire.API_FIND_COORDINATOR, group.encode())
        try:
            sock.sendall(kafkawire.offset_commit_v2_request(1, group, {self.topic: {0: 1}}))
            if not hold.seen.wait(10):
                return "no FindCoordinator seen", None, 10.0
            started.set()
            stop.wait(HOLD_SECONDS)
        finally:
            hold.release()
        return outcome(sock, 30, offset_commit_errors)


def keep_stalling(dialer, worker, stall, stop, started, outcomes):
    """Stall after stall, each on a new connection of `worker`, until stop."""
    try:
        while not stop.is_set():
            with dialer.open_on(worker) as sock:
                outcomes.append(stall.once(sock, stop, started))
    except Exception as e:  # noqa: BLE001 - reported by the test
        outcomes.append(("failed", repr(e), 0.0))
        started.set()


# ------------------------------------------------------------ the test

@pytest.fixture
def stalled_cluster(broker_factory, start_proxy):
    """(proxy, relay, topic, extra broker ids): Tansu behind a relay that
    advertises two more brokers at listeners that never accept."""
    blackholes = [Blackhole(), Blackhole()]
    relay_port = harness.free_port()
    upstream = broker_factory(advertised_port=relay_port)
    relay = Relay(upstream.port, port=relay_port)
    try:
        real_ids = [node for node, _, _, _ in kafkawire.probe(upstream.address)]
        # Above every real id: requests for "any broker" go to the lowest.
        extra = [max(real_ids) + 1 + i for i in range(len(blackholes))]
        for node, hole in zip(extra, blackholes):
            relay.extra_broker(node, hole.port)
        name = f"stall-{relay_port}"
        clients.create_topic(upstream.address, name, 1)
        proxy = start_proxy(upstream=relay.address,
                            extra={"kafka": {"connection_timeout_ms": CONNECT_TIMEOUT_MS}})
        yield proxy, relay, name, extra
    finally:
        relay.close()
        for hole in blackholes:
            hole.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stall_kind", ["connect", "coordinator"])
def test_a_stalled_client_does_not_slow_the_other_clients_of_its_worker(stalled_cluster, stall_kind):
    proxy, relay, name, extra = stalled_cluster
    dialer = Dialer(proxy.address)
    with dialer.open() as first:
        _, versions = kafkawire.api_versions(first, 0, 1)
    dialer.workers = proxy_workers(proxy)
    worker = 0  # the first connection's
    if stall_kind == "connect":
        low, high = versions.get(API_DESCRIBE_CONFIGS, (0, -1))
        assert low <= min(high, 3), f"the proxy offers no DescribeConfigs v0-v3: {low}-{high}"
        stall = ConnectStall(extra, min(high, 3))
    else:
        stall = CoordinatorStall(relay, name)

    load = [LoadClient(dialer.open_on(worker), name) for _ in range(CLIENTS)]
    try:
        run_phase("warm-up", load, WARM_UP_REQUESTS)
        before = run_phase("baseline before", load, REQUESTS)

        stop, started, outcomes = threading.Event(), threading.Event(), []
        staller = threading.Thread(target=keep_stalling,
                                   args=(dialer, worker, stall, stop, started, outcomes), daemon=True)
        staller.start()
        assert started.wait(20), "the stalling client never got its stall going"
        time.sleep(STALL_SETTLE)
        try:
            stalled = run_phase(f"{stall_kind} stall", load, REQUESTS)
        finally:
            stop.set()
            staller.join(CONNECT_TIMEOUT_MS / 1000 + 40)
        after = run_phase("baseline after", load, REQUESTS)
    finally:
        for c in load:
            c.sock.close()

    report = (f"{dialer.workers} workers, {CLIENTS} clients on worker {worker}\n  "
              + "\n  ".join(p.summary() for p in (before, stalled, after))
              + "\n  stalling client's outcomes (kind, error, seconds): "
              + ", ".join(f"({k}, {e}, {s:.1f})" for k, e, s in outcomes))
    print(report)

    assert not staller.is_alive(), f"the stalling client never got an outcome\n{report}"
    assert outcomes and all(kind in ("answer", "closed") for kind, _, _ in outcomes), (
        f"the stalling client got no clear outcome\n{report}")
    if stall_kind == "connect":
        # The first stall shows the connect really hung, and was bounded.
        _, _, seconds = outcomes[0]
        assert 0.8 * CONNECT_TIMEOUT_MS / 1000 <= seconds <= CONNECT_TIMEOUT_MS / 1000 + 10, (
            f"the stalled connect ended after {seconds:.1f} s, not about "
            f"connection_timeout_ms ({CONNECT_TIMEOUT_MS} ms)\n{report}")
    else:
        assert all(kind == "answer" for kind, _, _ in outcomes), (
            f"a commit waiting for its coordinator got no answer once the look-up went through\n{report}")

    reference = max(before.p99, after.p99)
    answered = len(stalled.latencies)
    assert answered == stalled.expected and stalled.p99 <= 2 * reference, (
        f"while one client's {stall_kind} stalled, the other {CLIENTS} clients of its worker "
        f"had p99 {stalled.p99 * 1000:.1f} ms (no-stall p99 {reference * 1000:.1f} ms, at most "
        f"2x allowed) and got {answered} of {stalled.expected} answers within {PHASE_DEADLINE:.0f} s: "
        f"the worker waited on the network\n{report}")
