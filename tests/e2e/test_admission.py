"""Fair admission (issue 11): `listen.max_connections_per_ip` and its
overrides (Kafka's max.connections.per.ip and
max.connections.per.ip.overrides), refusals and connection churn logged as
summaries rather than a line each.

The offender of the per-IP tests must come from another address than the
real client: each test creates a network namespace joined to the host by a
veth pair (both ends made here, removed at teardown), the proxy listens on
0.0.0.0, and the offender opens its sockets from inside the namespace.
"""

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clients
import harness
import kafkawire

HERE = Path(__file__).resolve().parent
# The proxy's summary interval for repeated lines (refusals, errors) and
# for client connects/disconnects (src/log_summary.rs).
SUMMARY_INTERVAL = 10


# --------------------------------------------------------------- netns

class Namespace:
    """A network namespace reached from the host at `host_ip`; inside it,
    `ip` is the namespace's own address."""

    def __init__(self, name, subnet):
        self.name = name
        self.host_ip = f"10.213.{subnet}.1"
        self.ip = f"10.213.{subnet}.2"
        self.host_link = f"kpr{subnet}h"
        self.inner_link = f"kpr{subnet}n"

    def create(self):
        run = self._run
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.inner_link)
        run("ip", "link", "set", self.inner_link, "netns", self.name)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
        run("ip", "link", "set", self.host_link, "up")
        inside = ("ip", "netns", "exec", self.name)
        run(*inside, "ip", "addr", "add", f"{self.ip}/30", "dev", self.inner_link)
        run(*inside, "ip", "link", "set", self.inner_link, "up")
        run(*inside, "ip", "link", "set", "lo", "up")

    def remove(self):
        # Deleting the namespace deletes its end of the pair, and with it ours.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)

    @staticmethod
    def _run(*argv):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr}"


@pytest.fixture
def netns():
    # A subnet of its own per test run, so parallel runs do not collide.
    subnet = 20 + os.getpid() % 200
    ns = Namespace(f"kpr-admission-{os.getpid()}", subnet)
    ns.remove()
    try:
        ns.create()
    except AssertionError as e:
        ns.remove()
        pytest.fail(f"cannot create a network namespace (root and `ip netns` needed): {e}")
    yield ns
    ns.remove()


# The offender, run inside the namespace: opens `count` connections one
# after the other, each asked for ApiVersions, then reports how many were
# answered and how many the proxy closed, and holds the open ones until its
# stdin closes.
OFFENDER = r"""
import sys
import kafkawire
address, count = sys.argv[1], int(sys.argv[2])
answered, closed, held = 0, 0, []
for i in range(count):
    s = kafkawire.connect(address, timeout=5)
    try:
        error, _ = kafkawire.api_versions(s, 0, correlation_id=i)
        assert error == 0
        answered += 1
        held.append(s)
    except (OSError, kafkawire.WireError):
        closed += 1
        s.close()
print(f"answered {answered} closed {closed}", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def offender(ns, address, count):
    """(answered, closed) for `count` connections opened from inside `ns`,
    the answered ones held open until the block ends."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", OFFENDER, address, str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(HERE)))
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"answered (\d+) closed (\d+)\n", line)
        assert m, f"offender printed {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield int(m.group(1)), int(m.group(2))
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def open_to_all(ns, **listen):
    """Proxy settings listening on every interface (so both 127.0.0.1 and
    the namespace reach it), advertising 127.0.0.1 to the real client."""
    port = harness.free_port()
    return port, {"listen": dict(address=f"0.0.0.0:{port}",
                                 advertised_address=f"127.0.0.1:{port}", **listen)}


def count_answered(address, count):
    """How many of `count` connections from 127.0.0.1 get an ApiVersions
    answer; the sockets are returned open."""
    socks, answered = [], 0
    for i in range(count):
        s = kafkawire.connect(address, timeout=5)
        socks.append(s)
        try:
            error, _ = kafkawire.api_versions(s, 0, correlation_id=i)
            answered += error == 0
        except (OSError, kafkawire.WireError):
            pass
    return answered, socks


PER_IP = 5


def test_per_ip_limit_refuses_only_the_offender(start_proxy, netns, topic):
    port, extra = open_to_all(netns, max_connections=100, max_connections_per_ip=PER_IP)
    proxy = start_proxy(extra=extra, metrics=True)
    name = topic(2)
    records = clients.make_records([0, 1], 20, tag="fair")
    with offender(netns, f"{netns.host_ip}:{port}", PER_IP + 5) as (answered, closed):
        print(f"offender from {netns.ip}: {answered} answered, {closed} closed")
        assert (answered, closed) == (PER_IP, 5), (
            f"max_connections_per_ip {PER_IP}: the offender should get exactly {PER_IP}")
        # The real client, from 127.0.0.1, is not affected.
        offsets = clients.produce_confluent(f"127.0.0.1:{port}", name, records)
        assert len(offsets) == len(records)
        line = proxy.wait_for_log(r"Refusing connection from 10\.213\.\d+\.2:\d+: "
                                  r"max_connections_per_ip \(5\)", timeout=5)
        print(f"proxy log: {line}")
        m = proxy.metrics()
        assert m['kafka_proxy_connections_refused_total{reason="per_ip_limit"}'] == 5, m
        assert m['kafka_proxy_connections_refused_total{reason="max_connections"}'] == 0, m
    consumed = clients.consume_confluent(f"127.0.0.1:{port}", name, [0, 1], len(records))
    clients.check_records(records, consumed)


def test_per_ip_override_raises_one_address(start_proxy, netns):
    port, extra = open_to_all(netns, max_connections=100, max_connections_per_ip=3,
                              max_connections_per_ip_overrides={netns.ip: 8})
    start_proxy(extra=extra)
    with offender(netns, f"{netns.host_ip}:{port}", 13) as (answered, closed):
        print(f"overridden {netns.ip}: {answered} answered, {closed} closed")
        assert (answered, closed) == (8, 5), "the override (8) should apply to its address"
        # Any other address keeps the default of 3.
        local, socks = count_answered(f"127.0.0.1:{port}", 6)
        print(f"127.0.0.1: {local} of 6 answered")
        for s in socks:
            s.close()
        assert local == 3


FLOOD = 2000


def test_refusal_flood_is_summarised(start_proxy):
    proxy = start_proxy(max_connections=2, metrics=True)
    mark = proxy.log_mark()
    with contextlib.ExitStack() as stack:
        for i in range(2):
            s = stack.enter_context(kafkawire.connect(proxy.address, timeout=5))
            assert kafkawire.api_versions(s, 0, correlation_id=i)[0] == 0
        started = time.monotonic()
        for _ in range(FLOOD):
            kafkawire.connect(proxy.address, timeout=5).close()
        # Every refusal (whatever its reason) is in the total.
        deadline = time.monotonic() + 30
        while (total := proxy.metrics()["kafka_proxy_connections_rejected"]) < FLOOD:
            assert time.monotonic() < deadline, f"refusals counted: {total}"
            time.sleep(0.2)
        print(f"{FLOOD} refused connections in {time.monotonic() - started:.1f} s")
        # The count of the last summary reaches the log within an interval.
        summary = r"Refused ([\d,]+) more connections? in the last"
        deadline = time.monotonic() + SUMMARY_INTERVAL + 5
        while True:
            lines = [ln for ln in proxy.log_since(mark).splitlines() if re.search(r"refus", ln, re.I)]
            counted = sum(int(m.group(1).replace(",", "")) for ln in lines
                          if (m := re.search(summary, ln)))
            full = [ln for ln in lines if "Refusing connection from" in ln]
            if len(full) + counted >= FLOOD or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"{len(lines)} refusal lines:\n" + "\n".join(lines))
        assert len(lines) < 20, f"{len(lines)} log lines for {FLOOD} refusals"
        assert len(full) + counted == FLOOD, (
            f"{len(full)} refusals logged in full + {counted} summarised != {FLOOD}")
        assert any(re.search(r"\(max_connections 2; [\d,]+ from 127\.0\.0\.1\)", ln) for ln in lines)
        key = 'kafka_proxy_connections_refused_total{reason="max_connections"}'
        assert proxy.metrics().get(key) == FLOOD


def test_client_churn_is_debug_with_info_summary(start_proxy):
    proxy = start_proxy()
    mark = proxy.log_mark()
    answered, socks = count_answered(proxy.address, 3)
    assert answered == 3
    for s in socks:
        s.close()
    # The harness's own readiness probe may fall in the same interval.
    line = proxy.wait_for_log(r"Clients: \d+ connected, \d+ disconnected in the last \d+ s, 0 open",
                              timeout=SUMMARY_INTERVAL + 5)
    print(f"proxy log: {line}")
    connected, disconnected = map(int, re.search(r"(\d+) connected, (\d+) disconnected", line).groups())
    assert 3 <= connected == disconnected <= 4, line
    log = proxy.log_since(mark)
    assert "Client connected from" not in log and "disconnected" not in log.replace(line, ""), log
    # At debug level each connect and disconnect has its line.
    verbose = start_proxy(log_level="debug")
    mark = verbose.log_mark()
    answered, socks = count_answered(verbose.address, 1)
    socks[0].close()
    print(verbose.wait_for_log(r"\[DEBUG\].*Client connected from 127\.0\.0\.1", since=mark))
    print(verbose.wait_for_log(r"\[DEBUG\].*Client 127\.0\.0\.1:\d+ disconnected", since=mark))


BAD_FRAMES = 200


def test_malformed_frame_flood_is_summarised(start_proxy):
    proxy = start_proxy()
    mark = proxy.log_mark()
    oversize = (0x7FFF_FFF0).to_bytes(4, "big") + b"\x00" * 16
    for _ in range(BAD_FRAMES):
        with kafkawire.connect(proxy.address, timeout=5) as bad:
            bad.sendall(oversize)
            assert kafkawire.wait_closed(bad, timeout=5), "a bad frame did not close its connection"
    line = proxy.wait_for_log(r"Closed ([\d,]+) more client connections? on errors in the last",
                              since=mark, timeout=SUMMARY_INTERVAL + 5)
    lines = [ln for ln in proxy.log_since(mark).splitlines() if re.search(r"Clos(ing|ed)", ln)]
    print(f"{len(lines)} lines for {BAD_FRAMES} bad frames:\n" + "\n".join(lines))
    full = [ln for ln in lines if "Closing connection from 127.0.0.1" in ln]
    counted = int(re.search(r"Closed ([\d,]+) more", line).group(1).replace(",", ""))
    assert len(lines) < 10
    assert len(full) + counted == BAD_FRAMES
    assert "from 127.0.0.1: " in line, "the summary names the peer and its problem"
