"""The user's guide's configuration examples, run as written (issue 12).

Each example of the guide (Quick Start, Development, Per-Topic) is copied
verbatim into guide_examples/*.yaml (under a 3-line header saying where it
comes from); where the guide is at hand ($KPR_GUIDE, default the project's
copy) each copy is checked against it. The test runs the file's text with
only two things replaced, each checked to hit exactly one place:

  - the broker address (your-kafka-broker:9092, localhost:9092): the
    test's Tansu;
  - the listen port 9092: a free port (still on 0.0.0.0, as written).

The examples set no listen.advertised_address and bind all interfaces, so
the proxy advertises the machine's canonical host name, as a Kafka broker
does for a listener without a host (Kafka's ListenerInfo
.withWildcardHostnamesResolved: InetAddress.getLocalHost()
.getCanonicalHostName()). Clients bootstrap on localhost and then follow the
advertised name; the test checks first that the name resolves to loopback
only, so the clients stay on 127.0.0.1.

The Production (SASL/TLS) example is test_production_example.py's.
"""

import os
import re
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

import clients
import harness

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = HERE / "guide_examples"
GUIDE = Path(os.environ.get("KPR_GUIDE", "/work/shared/seed/000_df3bb7b68943c204.txt"))
HEADER_LINES = 3
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]

# (file, the heading of its section in the guide, the broker address it names)
EXAMPLE_FILES = {
    "quick_start": ("quick_start.yaml", "## Quick Start", "your-kafka-broker:9092"),
    "development": ("development.yaml", "### Development (No Security)", "localhost:9092"),
    "per_topic": ("per_topic.yaml", "### Per-Topic Configuration", "localhost:9092"),
}


def example_text(name):
    """The example as the guide writes it (the copy without its header)."""
    lines = (EXAMPLES / EXAMPLE_FILES[name][0]).read_text().splitlines(keepends=True)
    assert all(line.startswith("# ") for line in lines[:HEADER_LINES]), lines[:HEADER_LINES]
    return "".join(lines[HEADER_LINES:])


@pytest.mark.parametrize("name", sorted(EXAMPLE_FILES))
def test_copies_are_the_guides_examples(name):
    text = example_text(name)
    assert 'address: "0.0.0.0:9092"' in text and "advertised_address" not in text
    if GUIDE.is_file():
        guide = GUIDE.read_text()
        section = guide[guide.index(EXAMPLE_FILES[name][1]):]
        assert re.search(r"```yaml\n(.*?)```", section, re.S).group(1) == text


def canonical_host_name():
    """What the proxy should advertise: the host name, canonicalised by
    getaddrinfo(AI_CANONNAME) as the proxy does it."""
    host = socket.gethostname()
    try:
        canonical = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)[0][3]
    except socket.gaierror:
        canonical = ""
    return canonical or host


@pytest.fixture(scope="module")
def advertised_host():
    host = canonical_host_name()
    addresses = {a[4][0] for a in socket.getaddrinfo(host, None)}
    # The clients follow this name: it must keep them on this machine's
    # loopback (tests talk to nothing else).
    assert addresses and all(a.startswith("127.") or a == "::1" for a in addresses), (
        f"this machine's host name {host} resolves to {addresses}, not loopback only: "
        "these tests need it in /etc/hosts as 127.0.0.1")
    return host


def run_example(name, run_dir, broker):
    """Start the example (broker and listen port replaced); returns (proxy, port)."""
    text = example_text(name)
    port = harness.free_port()
    for old, new in ((EXAMPLE_FILES[name][2], broker.address),
                     ('"0.0.0.0:9092"', f'"0.0.0.0:{port}"')):
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the {name} example"
        text = text.replace(old, new)
    proxy = harness.Proxy(run_dir, yaml.safe_load(text), name=name, config_text=text)
    return proxy.start(), port


@pytest.fixture
def example(broker, tmp_path, request):
    """example(name) -> (proxy, port); stopped at teardown (exit 0 asserted)."""
    started = []

    def start(name):
        proxy, port = run_example(name, tmp_path, broker)
        started.append(proxy)
        return proxy, port

    yield start
    for proxy in started:
        code, graceful = proxy.stop(10.0)
        if not (graceful and code == 0):
            print(proxy.describe())
        assert graceful and code == 0, f"{proxy.name}: exit {code} (graceful={graceful})"


def message_lines(log):
    """(level, message) of each text-format log line
    (`2026-12-03T06:44:15.901397846Z [INFO] Listening on 0.0.0.0:9092`)."""
    out = []
    for line in log.splitlines():
        m = re.match(r"\S+ \[(TRACE|DEBUG|INFO|WARN|ERROR)\] (.*)$", line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


def start_up_lines(listen, mapping_lines):
    """The guide's "You should see" lines (Quick Start, step 3)."""
    return [f"Starting Kafka Partition Remapper v{VERSION}", f"Listening on {listen}",
            "Connected to Kafka cluster", *mapping_lines]


def assert_in_order(messages, expected, log):
    """Each of `expected` is an INFO message of `messages` ((level,
    message) pairs), in that order."""
    at = 0
    for want in expected:
        found = [i for i, m in enumerate(messages) if m == ("INFO", want) and i >= at]
        assert found, f"no INFO line {want!r} (after line {at}) in:\n" + log[-4000:]
        at = found[0] + 1


def assert_start_up_lines(proxy, port, mapping_lines):
    expected = start_up_lines(f"0.0.0.0:{port}", mapping_lines)
    proxy.wait_for_log(re.escape(expected[-1]), timeout=30)
    log = proxy.log_since(0)
    assert_in_order(message_lines(log), expected, log)


def assert_advertised(proxy, port, host):
    proxy.wait_for_log(
        re.escape(f"advertising {host}:{port} (listen.address binds all interfaces; "
                  "set listen.advertised_address to override)"), timeout=5)
    md = clients.list_topics(f"localhost:{port}")
    assert {(b.host, b.port) for b in md.brokers.values()} == {(host, port)}, md.brokers


def round_trip(port, topic, virtual, physical, used, broker, tag):
    """The topic (physical partitions on the broker) shows `virtual`
    partitions through the proxy; records produced to `used` come back."""
    bootstrap = f"localhost:{port}"
    if clients.partition_count(broker.address, topic, timeout=10) is None:
        clients.create_topic(broker.address, topic, physical)
    assert clients.wait_partition_count(bootstrap, topic, virtual) == virtual
    records = clients.make_records(used, 4 * len(used), tag=tag)
    clients.produce_confluent(bootstrap, topic, records)
    got = clients.consume_confluent(bootstrap, topic, used, len(records))
    clients.check_records(records, [r for r in got if tag.encode() in r[3]])


def test_quick_start(example, broker, advertised_host):
    proxy, port = example("quick_start")
    assert_start_up_lines(proxy, port, ["Mapping: 100 virtual -> 10 physical partitions (10:1)"])
    assert_advertised(proxy, port, advertised_host)
    # The guide's step 2 topic, and its step 4 partition 50.
    round_trip(port, "my-topic", 100, 10, [0, 10, 50, 99], broker, "quick-start")


def test_development(example, broker, advertised_host):
    proxy, port = example("development")
    assert_start_up_lines(proxy, port, ["Mapping: 100 virtual -> 10 physical partitions (10:1)"])
    assert_advertised(proxy, port, advertised_host)
    # logging.level debug, as the example asks.
    assert any(level == "DEBUG" for level, _ in message_lines(proxy.log_since(0))), \
        proxy.log_since(0)[-2000:]
    round_trip(port, "dev-topic", 100, 10, [1, 11, 98], broker, "development")


def test_per_topic(example, broker, advertised_host):
    proxy, port = example("per_topic")
    assert_start_up_lines(proxy, port, [
        "Mapping: 100 virtual -> 10 physical partitions (10:1)",
        "Mapping: 500 virtual -> 10 physical partitions (50:1) for topic events",
        "Mapping: 3 virtual -> 3 physical partitions (1:1) for topic config",
        "Mapping: 50 virtual -> 5 physical partitions (10:1) for topics matching audit\\..*",
    ])
    assert_advertised(proxy, port, advertised_host)
    round_trip(port, "events", 500, 10, [0, 10, 250, 499], broker, "per-topic-events")
    round_trip(port, "config", 3, 3, [0, 1, 2], broker, "per-topic-config")
    round_trip(port, "audit.logins", 50, 5, [0, 5, 49], broker, "per-topic-audit")
    round_trip(port, "orders", 100, 10, [0, 99], broker, "per-topic-default")
