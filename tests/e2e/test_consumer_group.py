"""A consumer group through the proxy: three confluent-kafka members share a
6-partition topic and commit synchronously after every batch; one leaves and
the other two take over its partitions from its committed offsets. Nothing
is lost or read twice, and the committed offsets at the end equal the high
watermarks, read through the proxy and directly on the broker."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

import clients

PARTITIONS = 6
PER_PHASE = 3000


class Member:
    def __init__(self, name, bootstrap, group, topic):
        self.name = name
        self.records = []          # (partition, offset, key, value)
        self.assignment = set()
        self.commit_failures = 0
        self.closed = False
        self.consumer = Consumer(clients.confluent_conf(bootstrap, **{
            "group.id": group, "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000}))
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assignment = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer, partitions):
        self.assignment = set()

    def poll(self, timeout=0.2):
        batch = []
        for msg in self.consumer.consume(num_messages=500, timeout=timeout):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            batch.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        if batch:
            self.records.extend(batch)
            try:
                self.consumer.commit(asynchronous=False)
            except KafkaException as e:
                # A commit refused during a rebalance: Kafka's at-least-once,
                # the batch may be read again by the next owner.
                self.commit_failures += 1
                print(f"{self.name}: commit failed: {e}")

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(members, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (
            f"timed out after {timeout}s waiting for {what}; assignments "
            + ", ".join(f"{m.name}={sorted(m.assignment)} ({len(m.records)} records)"
                        for m in members))
        for m in members:
            m.poll()


def stable(members):
    """Every member holds partitions and together they hold each exactly once."""
    def check():
        owned = [p for m in members for p in m.assignment]
        return all(m.assignment for m in members) and sorted(owned) == list(range(PARTITIONS))
    return check


@pytest.mark.timeout(240)  # four rebalance/consume phases, each bounded below
def test_group_of_three_one_leaves(broker, proxy, topic):
    name = topic(PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [Member(n, proxy.address, group, name) for n in ("a", "b", "c")]
    try:
        a, b, c = members
        poll_until(members, stable(members), 90, "3 members to share 6 partitions")

        phase1 = clients.make_records(range(PARTITIONS), PER_PHASE, tag="one")
        clients.produce_confluent(proxy.address, name, phase1)
        total = lambda: sum(len(m.records) for m in members)  # noqa: E731
        poll_until(members, lambda: total() >= PER_PHASE, 60, f"{PER_PHASE} records")
        for m in members:
            assert m.records, f"member {m.name} consumed nothing"
            assert {p for p, *_ in m.records} <= m.assignment, (
                f"member {m.name} read partitions it does not own")

        c_partitions = set(c.assignment)
        c.close()
        mark = {m.name: len(m.records) for m in members}
        rest = [a, b]
        poll_until(rest, stable(rest), 90, "2 remaining members to take over 6 partitions")
        assert c_partitions <= a.assignment | b.assignment

        phase2 = clients.make_records(range(PARTITIONS), PER_PHASE, tag="two")
        clients.produce_confluent(proxy.address, name, phase2)
        poll_until(rest, lambda: total() >= 2 * PER_PHASE, 60, f"{2 * PER_PHASE} records")
        for m in rest:  # anything extra (duplicates) would arrive now
            m.poll(1.0)

        # Takeover: a and b read c's partitions on from c's committed
        # offsets, not from the beginning.
        after = [r for m in rest for r in m.records[mark[m.name]:]]
        assert any(r[0] in c_partitions for r in after), (
            "nobody consumed the new records of the partitions c left")
        if not c.commit_failures:
            reread = [r[:2] for r in after if r[0] in c_partitions and b":one" in r[3]]
            assert not reread, f"c's committed records read again after takeover: {reread[:5]}"

        consumed = sorted((r for m in members for r in m.records), key=lambda r: r[:2])
        expected = phase1 + phase2  # per partition: production order
        if sum(m.commit_failures for m in members):
            consumed = sorted(set(consumed), key=lambda r: r[:2])  # at-least-once
        clients.check_records(expected, consumed)

        high = clients.high_watermarks(broker.address, name, range(PARTITIONS))
        assert high == {p: 2 * PER_PHASE // PARTITIONS for p in range(PARTITIONS)}
        assert clients.committed(proxy.address, group, name, range(PARTITIONS)) == high
        # Directly on the broker: the group's offsets are where Kafka keeps them.
        assert clients.committed(broker.address, group, name, range(PARTITIONS)) == high
    finally:
        for m in members:
            m.close()

