"""An idle virtual partition next to a busy sibling: reading it costs about
one pass over the sibling's data, not one pass per poll.

VP 4 (k = 1 on physical 0) gets a few MB; VP 0 (k = 0 on physical 0) gets
nothing. A consumer of VP 0 alone must reach the end of physical 0 (through
empty batches standing in for VP 4's data) and then stay there: the proxy's
metrics show the upstream bytes read (kafka_proxy_fetch_bytes_upstream_total)
growing by about the physical partition's size for the first pass, and by
almost nothing during the following seconds of polling, while the bytes
returned to the client stay a small fraction (empty batches only). More data
for VP 4 while the idle consumer polls costs about that much more, once.
Each client is checked as its own consumer.
"""

import time

import kafka
import kafka.structs
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

import clients
import virtual

V, P = 20, 4
BUSY, IDLE = 4, 0              # both on physical 0
UP = "kafka_proxy_fetch_bytes_upstream_total"
RETURNED = "kafka_proxy_fetch_bytes_returned_total"
FILTERED = "kafka_proxy_batches_filtered_total"


def fill(proxy_address, name, n, tag):
    recs = [(BUSY, None, f"{tag}|{i}|".encode().ljust(200, b"z"), []) for i in range(n)]
    virtual.produce_confluent_full(proxy_address, name, recs, **{"linger.ms": 50})


def physical_bytes(broker_address, name, partition=0):
    """Size of the record batches of a physical partition on the broker."""
    return sum(len(b["raw"]) for b in virtual.raw_batches(broker_address, name, partition))


def delta(after, before):
    return {k: after[k] - before[k] for k in (UP, RETURNED, FILTERED)}


class IdleConfluent:
    def __init__(self, address, name):
        self.consumer = Consumer(clients.confluent_conf(address, **{
            "group.id": "kpr-e2e-idle", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
        self.tp = TopicPartition(name, IDLE, OFFSET_BEGINNING)
        self.consumer.assign([self.tp])
        self.records = 0

    def poll(self, seconds, until_eof=False):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(num_messages=1000, timeout=0.1):
                err = msg.error()
                if err is None:
                    self.records += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    if until_eof:
                        return True
                else:
                    raise AssertionError(f"VP {IDLE}: {err}")
        return not until_eof

    def position(self):
        """None: librdkafka's position() is the offset after the last record
        handed to the application, and an idle VP hands none; reaching the
        partition EOF is what shows it got to the end."""
        return None

    def close(self):
        self.consumer.close()


class IdleKafkaPython:
    def __init__(self, address, name):
        self.consumer = kafka.KafkaConsumer(bootstrap_servers=[address], group_id=None,
                                            enable_auto_commit=False, fetch_max_wait_ms=100,
                                            request_timeout_ms=30000)
        self.tp = kafka.structs.TopicPartition(name, IDLE)
        self.consumer.assign([self.tp])
        self.consumer.seek_to_beginning(self.tp)
        self.records = 0

    def poll(self, seconds, until_eof=False):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = self.consumer.poll(timeout_ms=100, max_records=1000)
            self.records += sum(len(v) for v in got.values())
            high = self.consumer.highwater(self.tp)
            if until_eof and high is not None and self.consumer.position(self.tp) >= high:
                return True
        return not until_eof

    def position(self):
        return self.consumer.position(self.tp)

    def close(self):
        self.consumer.close()


IDLE_CONSUMERS = {"confluent-kafka": IdleConfluent, "kafka-python": IdleKafkaPython}


@pytest.mark.parametrize("client", list(IDLE_CONSUMERS))
def test_idle_vp_beside_busy_sibling(broker, start_proxy, topic, client):
    proxy = start_proxy(mapping=virtual.mapping(V, P), metrics=True)
    name = topic(P, prefix="vp-idle")
    fill(proxy.address, name, 10000, "one")
    size = physical_bytes(broker.address, name)
    high = clients.high_watermarks(broker.address, name, [0])[0]
    assert size > 1_500_000, size

    before = proxy.metrics()
    consumer = IDLE_CONSUMERS[client](proxy.address, name)
    try:
        assert consumer.poll(60, until_eof=True), (
            f"{client}: VP {IDLE} did not reach the end of physical 0 in 60 s; position "
            f"{consumer.position()}, high watermark {high}; metrics {delta(proxy.metrics(), before)}")
        first = proxy.metrics()
        pass1 = delta(first, before)
        print(f"{client} first pass over {size} bytes: {pass1}")
        assert consumer.records == 0, f"idle VP {IDLE} returned {consumer.records} records"
        assert pass1[UP] <= 2 * size, (
            f"first pass read {pass1[UP]} bytes upstream for a {size}-byte partition")
        assert pass1[RETURNED] <= 0.05 * size, (
            f"{pass1[RETURNED]} bytes returned for an idle VP (only empty batches expected)")

        consumer.poll(5)                    # idle: ~50 fetches at the end
        idle = delta(proxy.metrics(), first)
        print(f"{client} 5 s idle at the end: {idle}")
        assert idle[UP] <= 0.05 * size, (
            f"polling at the end read {idle[UP]} more bytes upstream "
            f"({idle[UP] / size:.1f} passes over the {size}-byte partition in 5 s)")

        # More data for the busy sibling: read once more, not per poll.
        mark = proxy.metrics()
        fill(proxy.address, name, 4000, "two")
        added = physical_bytes(broker.address, name) - size
        consumer.poll(4)
        live = delta(proxy.metrics(), mark)
        print(f"{client} {added} bytes added to VP {BUSY} while polling: {live}")
        assert live[UP] <= 2 * added + 0.05 * size, (
            f"{live[UP]} bytes read upstream for {added} bytes of new sibling data")
        assert consumer.records == 0
        if consumer.position() is not None:
            end = clients.high_watermarks(broker.address, name, [0])[0]
            assert consumer.position() == end, (
                f"the idle consumer's position {consumer.position()} is not at the end of "
                f"physical 0 ({end})")
    finally:
        consumer.close()


def test_repeated_fresh_readers_cost_one_pass_each(broker, start_proxy, topic):
    """kcat -e, read VP 0 three times from the beginning: each read costs
    about one pass over physical 0, and returns nothing."""
    proxy = start_proxy(mapping=virtual.mapping(V, P), metrics=True)
    name = topic(P, prefix="vp-idle-kcat")
    fill(proxy.address, name, 8000, "k")
    size = physical_bytes(broker.address, name)
    for i in range(3):
        before = proxy.metrics()
        got = virtual.read_vp_kcat(proxy.address, name, IDLE)
        d = delta(proxy.metrics(), before)
        print(f"kcat pass {i}: {d} for {size} bytes")
        assert got == [], f"VP {IDLE}: {got[:3]}"
        assert d[UP] <= 2 * size, f"pass {i}: {d[UP]} bytes upstream for {size}"
