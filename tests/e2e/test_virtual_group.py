"""A consumer group on 20 virtual partitions over 4 physical, through the
proxy, and what it leaves on the broker.

Five confluent-kafka members share the 20 VPs and commit synchronously
after every batch. After about half the records the group is stopped (the
members stop processing and leave one by one), then five new members of the
same group start and finish. Every record is consumed; a record is consumed
twice only when the commit after its first consumption failed (Kafka's
at-least-once); the second run starts at the committed offsets.

Then the broker, read directly (confluent-kafka against Tansu):
- the group holds committed offsets only on physical partitions 0..3 (Tansu
  accepts commits on partitions that do not exist, Kafka refuses them: a
  proxy passing VP numbers through would "work" on Tansu only);
- the k = 0 VPs' progress is at (group, topic, p), the k >= 1 VPs' at
  (group.kpr-vp-k<k>, topic, p), equal to what the proxy reports per VP;
- derived groups are hidden from ListGroups through the proxy;
- every record is in the physical topic, k >= 1 records tagged kpr.vp.

Tansu: after several members of a group closed together, Tansu was seen not
to assign a new member within 90 s; members here leave one at a time, each
leave followed by a settled rebalance, so the restart does not depend on it.
Tansu 0.6 with memory storage answers a Fetch at an offset inside a record
batch from the NEXT batch on (fetch at 50 of a batch 0..99: records from
100; Kafka returns the batch holding 50 and the client skips to 50), so a
consumer resuming from a commit made mid-batch loses the rest of that batch,
with or without the proxy. Every record here is produced as its own batch,
so every committed offset is a batch boundary.
"""

import time
import uuid
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

import clients
import virtual
from relay import API_DELETE_GROUPS

V, P = 20, 4
PER_VP = 300
TOTAL = V * PER_VP


class Member:
    def __init__(self, name, bootstrap, group, topic, log):
        self.name = name
        self.log = log               # shared: (member, partition, offset, value, committed?)
        self.assignment = set()
        self.processing = True
        self.closed = False
        self.commit_failures = 0
        self.consumer = Consumer(clients.confluent_conf(bootstrap, **{
            "group.id": group, "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100}))
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assignment = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer, partitions):
        self.assignment = set()

    def poll(self, timeout=0.1):
        batch = []
        for msg in self.consumer.consume(num_messages=50, timeout=timeout):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            batch.append((msg.partition(), msg.offset(), msg.value()))
        if not batch or not self.processing:
            return  # stopped: read but neither processed nor committed
        try:
            self.consumer.commit(asynchronous=False)
            ok = True
        except KafkaException as e:
            # Refused during a rebalance: these may be read again.
            self.commit_failures += 1
            ok = False
            print(f"{self.name}: commit failed: {e}")
        self.log.extend((self.name, p, o, v, ok) for p, o, v in batch)

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(members, condition, timeout, what, describe=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (
            f"timed out after {timeout}s waiting for {what}; "
            + ", ".join(f"{m.name}={sorted(m.assignment)}" for m in members if not m.closed)
            + (f"; {describe()}" if describe else ""))
        for m in members:
            if not m.closed:
                m.poll()


def settled(members):
    live = [m for m in members if not m.closed]

    def check():
        owned = sorted(p for m in live for p in m.assignment)
        return all(m.assignment for m in live) and owned == list(range(V))
    return check


def leave_one_by_one(members):
    """Stop processing, then close members one at a time, each leave
    followed by the rest settling on all 20 VPs."""
    for m in members:
        m.processing = False
    for i, m in enumerate(members):
        m.close()
        rest = members[i + 1:]
        if rest:
            poll_until(rest, settled(rest), 60, f"{len(rest)} members to settle after {m.name} left")


@pytest.mark.timeout(240)
def test_group_of_five_stops_and_resumes(broker, start_proxy, topic):
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-group")
    group = f"vg-{uuid.uuid4().hex[:8]}"
    records = [(vp, None, f"g|{vp}|{i}".encode(), []) for i in range(PER_VP) for vp in range(V)]
    reports = virtual.produce_confluent_full(proxy.address, name, records,
                                             **{"batch.num.messages": 1, "linger.ms": 0})
    offsets = defaultdict(list)                 # vp -> [(offset, value)] in order
    for (vp, _, v, _), (p, off) in zip(records, reports):
        assert p == vp
        offsets[vp].append((off, v))
    end = {vp: max(o for o, _ in offsets[vp]) + 1 for vp in range(V)}

    log = []
    first = [Member(f"a{i}", proxy.address, group, name, log) for i in range(5)]
    second = []
    try:
        poll_until(first, settled(first), 90, "5 members to share 20 VPs")
        poll_until(first, lambda: len(log) >= TOTAL // 2, 60, f"{TOTAL // 2} records")
        leave_one_by_one(first)
        stopped_at = len(log)
        mid = clients.committed(proxy.address, group, name, range(V))
        print(f"stopped after {stopped_at} records; committed per VP: {mid}")
        assert stopped_at < TOTAL, "everything was consumed before the stop"

        second = [Member(f"b{i}", proxy.address, group, name, log) for i in range(5)]
        unique = lambda: len({(p, o) for _, p, o, _, _ in log})  # noqa: E731
        def missing():
            seen = defaultdict(set)
            for _, p, o, _, _ in log:
                seen[p].add(o)
            short = {vp: (len(seen[vp]), max(seen[vp], default=None), end[vp])
                     for vp in range(V) if len(seen[vp]) < PER_VP}
            positions = {}
            for m in second:
                for tp in m.consumer.position([clients.TopicPartition(name, p) for p in m.assignment]):
                    positions[tp.partition] = tp.offset
            return (f"VPs short of records (distinct read, highest offset read, end): {short}; "
                    f"positions of the second run: {dict(sorted(positions.items()))}; "
                    f"committed at the stop: {mid}")

        poll_until(second, lambda: unique() >= TOTAL, 60, f"all {TOTAL} records", missing)
        for _ in range(10):   # anything extra (duplicates) would come now
            for m in second:
                m.poll()
        leave_one_by_one(second)
    finally:
        for m in first + second:
            m.close()

    # Nothing lost, nothing foreign, order kept per VP.
    by_vp = defaultdict(list)
    for member, p, o, v, ok in log:
        by_vp[p].append((o, v))
        assert int(v.decode().split("|")[1]) == p, f"{member} read {v} from VP {p}"
    for vp in range(V):
        assert sorted(set(by_vp[vp])) == offsets[vp], (
            f"VP {vp}: {len(set(by_vp[vp]))} distinct records consumed, {PER_VP} produced")

    # Duplicates only where a commit after the first read failed, and the
    # second run started from the committed offsets.
    counts = Counter((p, o) for _, p, o, _, _ in log)
    uncommitted = {(p, o) for _, p, o, _, ok in log if not ok}
    unexplained = sorted(k for k, c in counts.items() if c > 1 and k not in uncommitted)
    assert not unexplained, f"read twice although committed: {unexplained[:10]}"
    second_reads = defaultdict(list)
    for member, p, o, _, _ in log[stopped_at:]:
        second_reads[p].append(o)
    for vp, offs in second_reads.items():
        start = mid.get(vp, -1)
        assert start < 0 or min(offs) >= start, (
            f"VP {vp}: second run read offset {min(offs)} below the committed {start}")
        if start >= 0 and not any(c > 1 for (p, _), c in counts.items() if p == vp):
            assert min(offs) == min(o for o, _ in offsets[vp] if o >= start), (
                f"VP {vp}: second run started at {min(offs)}, committed {start}")

    # Through the proxy: every VP committed at its end.
    final = clients.committed(proxy.address, group, name, range(V))
    assert final == end, f"committed through the proxy {final}, ends {end}"

    # On the broker, directly.
    on_broker = virtual.committed_on_broker(broker.address, group)
    assert set(on_broker) == {(name, p) for p in range(P)}, (
        f"group {group} on the broker commits {sorted(on_broker)}: expected partitions 0..{P - 1} "
        f"of {name} only")
    assert {p: off for (_, p), off in on_broker.items()} == {p: end[p] for p in range(P)}
    for k in range(1, V // P):
        derived = f"{group}.kpr-vp-k{k}"
        got = virtual.committed_on_broker(broker.address, derived)
        assert {p: off for (t, p), off in got.items() if t == name} == {
            p: end[k * P + p] for p in range(P)}, f"{derived} on the broker: {got}"
        assert all(p < P for _, p in got), f"{derived}: a partition >= {P}: {got}"

    def list_groups(address):
        client = clients.admin(address)  # must outlive the future
        result = client.list_consumer_groups(request_timeout=30).result()
        return {g.group_id for g in result.valid}, result.errors

    listed, errors = list_groups(proxy.address)
    on_broker_listed, broker_errors = list_groups(broker.address)
    hidden = {g for g in listed if ".kpr-vp-k" in g}
    assert not hidden, f"derived groups listed through the proxy: {hidden}"
    assert group in listed, (
        f"{group} not listed through the proxy: {listed} (errors {errors}); the broker "
        f"lists {sorted(g for g in on_broker_listed if g.startswith(group))} (errors {broker_errors})")

    direct = virtual.read_all_direct(broker.address, name, range(P))
    assert len(direct) == TOTAL
    for m in direct:
        vp = int(m.value.decode().split("|")[1])
        assert m.partition == vp % P and virtual.tag_of(m.headers) == (vp if vp >= P else None), m


def test_simple_commits_and_delete_group(broker, start_proxy, topic):
    """A consumer that assigns VPs itself (no group membership) commits
    offsets for k = 0 and k >= 1 VPs: they read back through the proxy and
    sit on the broker at (group, topic, p) and (group.kpr-vp-k<k>, topic,
    p). Deleting the group through the proxy deletes its derived groups."""
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-simple")
    group = f"vs-{uuid.uuid4().hex[:8]}"
    wanted = {0: 3, 5: 1, 19: 2, 12: 7}
    consumer = Consumer(clients.confluent_conf(proxy.address, **{
        "group.id": group, "enable.auto.commit": False}))
    try:
        done = consumer.commit(offsets=[clients.TopicPartition(name, vp, off)
                                        for vp, off in wanted.items()], asynchronous=False)
        assert all(tp.error is None for tp in done), [(tp.partition, tp.error) for tp in done]
    finally:
        consumer.close()
    assert clients.committed(proxy.address, group, name, list(wanted)) == wanted
    expect = defaultdict(dict)
    for vp, off in wanted.items():
        expect[vp // P][(name, vp % P)] = off
    for k, offs in expect.items():
        g = group if k == 0 else f"{group}.kpr-vp-k{k}"
        assert virtual.committed_on_broker(broker.address, g) == offs, g

    client = clients.admin(proxy.address)  # must outlive the futures
    futures = client.delete_consumer_groups([group], request_timeout=30)
    futures[group].result(timeout=30)
    left = {k: virtual.committed_on_broker(broker.address, group if k == 0 else
                                           f"{group}.kpr-vp-k{k}") for k in range(V // P)}
    assert all(not v for v in left.values()), f"offsets left after DeleteGroups: {left}"


def test_a_failed_derived_group_deletion_is_reported(broker_behind_relay, start_proxy):
    """Deleting a group through the proxy also deletes its derived groups
    (GROUP.kpr-vp-k<k>). When one of those deletions fails (here the relay
    answers it GROUP_AUTHORIZATION_FAILED, 30, as a cluster whose ACLs let
    the identity delete the group but not its derived groups would), the
    client must hear it: its own group's result carries that error, and the
    proxy logs which derived group is left, instead of answering success
    over offsets that stay behind. Kafka's own DeleteGroups answers each
    group's failure in its result."""
    upstream, relay = broker_behind_relay
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P))
    name = f"vp-delgrp-{relay.port}"
    clients.create_topic(upstream.address, name, P)
    group = f"vd-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(clients.confluent_conf(proxy.address, **{
        "group.id": group, "enable.auto.commit": False}))
    try:
        done = consumer.commit(offsets=[clients.TopicPartition(name, vp, 1) for vp in (0, 5, 9)],
                               asynchronous=False)
        assert all(tp.error is None for tp in done), [(tp.partition, tp.error) for tp in done]
    finally:
        consumer.close()
    derived = f"{group}.kpr-vp-k1".encode()
    relay.answer_error([API_DELETE_GROUPS], 30, derived)
    mark = proxy.log_mark()
    client = clients.admin(proxy.address)  # must outlive the futures
    futures = client.delete_consumer_groups([group], request_timeout=30)
    with pytest.raises(KafkaException) as failed:
        futures[group].result(timeout=30)
    assert failed.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, failed.value
    proxy.wait_for_log(rf"{group}\.kpr-vp-k1", since=mark)
