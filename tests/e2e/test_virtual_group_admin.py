"""Derived groups answer admin actions as their group would, and keep their
offsets as long as their group's members commit (issue 8, findings 10, 11).

Committed offsets of k >= 1 virtual partitions live in derived groups
(GROUP.kpr-vp-k<k>) that have no members. Kafka would accept anything for
a memberless group; the proxy must answer what GROUP itself would:

- A standalone OffsetCommit (generation -1, no member id: an admin tool, or
  a consumer assigning partitions itself) is accepted by Kafka only while
  the group has no members, else UNKNOWN_MEMBER_ID (ClassicGroup.
  validateOffsetCommit, "offset commits are only accepted when the group is
  empty").
- OffsetDelete of a group with members keeps the offsets of topics the
  group is subscribed to: GROUP_SUBSCRIBED_TO_TOPIC per partition
  (OffsetMetadataManager.deleteOffsets, KIP-496). Tansu 0.6 has no
  OffsetDelete, so the proxy does not offer it; here a relay adds it to the
  broker's ApiVersions and answers it itself (every partition NONE), so the
  test sees which OffsetDelete requests the proxy sends, not what Tansu
  would delete.
- Kafka expires a memberless group's offsets offsets.retention.minutes
  after their last commit, while a live group keeps its own. The proxy
  re-commits a group's derived offsets unchanged when a member of the group
  commits, at most once per kafka.derived_offset_refresh_interval_ms. Tansu
  does not expire offsets at all, so the test checks the mechanism: the
  re-commits reach the broker (counted by a relay), carry the offsets
  unchanged, and come at most once per interval.
"""

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

import clients
import kafkawire
import virtual

V, P = 20, 4
UNKNOWN_MEMBER_ID = 25
GROUP_SUBSCRIBED_TO_TOPIC = 86


def join(bootstrap, group, topic, timeout=60):
    """A confluent-kafka member of `group` subscribed to `topic`, polled
    until it owns all V virtual partitions."""
    assigned = set()
    consumer = Consumer(clients.confluent_conf(bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}))
    consumer.subscribe([topic], on_assign=lambda c, ps: assigned.update(tp.partition for tp in ps))
    deadline = time.monotonic() + timeout
    while assigned != set(range(V)):
        assert time.monotonic() < deadline, f"member of {group} not assigned all {V} VPs: {sorted(assigned)}"
        consumer.poll(0.2)
    return consumer


class Heartbeats:
    """Polls a member in the background so that it stays in its group."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            self.consumer.poll(0.1)

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def standalone_commit(bootstrap, group, topic, offsets, timeout=30):
    """Commit {vp: offset} with generation -1 and no member id (a consumer
    that never joins): {vp: error code}, per partition (the commit
    callback sees each partition's error; a synchronous commit raises
    only the first)."""
    result = {}

    def on_commit(err, partitions):
        result.update({tp.partition: (tp.error.code() if tp.error else 0) for tp in partitions})
        result.setdefault("err", err)

    consumer = Consumer(clients.confluent_conf(bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "on_commit": on_commit}))
    try:
        consumer.commit(offsets=[TopicPartition(topic, vp, off) for vp, off in offsets.items()],
                        asynchronous=True)
        deadline = time.monotonic() + timeout
        while "err" not in result:
            assert time.monotonic() < deadline, f"no commit result for {offsets} in {timeout}s"
            consumer.poll(0.1)
    finally:
        consumer.close()
    print(f"standalone commit {offsets}: {result}")
    del result["err"]
    return result


def wait_group_empty(broker_address, group, timeout=60):
    client = clients.admin(broker_address)
    deadline = time.monotonic() + timeout
    while True:
        desc = client.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=10)
        if not desc.members:
            return desc.state
        assert time.monotonic() < deadline, f"{group} still has members: {desc}"
        time.sleep(0.5)


def test_standalone_commit_refused_while_the_group_has_members(broker, start_proxy, topic):
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-gadm-commit")
    group = f"gac-{uuid.uuid4().hex[:8]}"
    derived = f"{group}.kpr-vp-k1"

    # No members yet: Kafka accepts a standalone commit, and so must the proxy.
    assert standalone_commit(proxy.address, group, name, {5: 3}) == {5: 0}
    assert virtual.committed_on_broker(broker.address, derived) == {(name, 1): 3}

    member = Heartbeats(join(proxy.address, group, name))
    try:
        # VP 5 is k = 1 (derived group), VP 1 is k = 0 (the group itself).
        codes = standalone_commit(proxy.address, group, name, {5: 7})
        assert codes == {5: UNKNOWN_MEMBER_ID}, (
            f"standalone commit of VP 5 while {group} has a member: {codes} (Kafka: UNKNOWN_MEMBER_ID)")
        # The k = 0 part goes to the group itself and is the broker's to
        # answer: Tansu 0.6 answers UNKNOWN_MEMBER_ID as Kafka does, but
        # (unlike Kafka) writes the offset all the same, so the group's own
        # offset on the broker is not checked. The derived part gets the
        # same answer and is not written.
        mixed = standalone_commit(proxy.address, group, name, {1: 9, 6: 9})
        assert mixed == {1: UNKNOWN_MEMBER_ID, 6: UNKNOWN_MEMBER_ID}, f"VP 1 (k = 0), VP 6 (k = 1): {mixed}"
        on_broker = virtual.committed_on_broker(broker.address, derived)
        assert on_broker == {(name, 1): 3}, f"{derived} on the broker after refused commits: {on_broker}"
        print(f"{group} on the broker (Tansu): {virtual.committed_on_broker(broker.address, group)}")
    finally:
        member.close()


def test_offset_delete_keeps_derived_offsets_of_subscribed_topics(broker_behind_relay, start_proxy, topic):
    upstream, relay = broker_behind_relay
    relay.offer_apis({kafkawire.API_OFFSET_DELETE: (0, 0)})
    deletes = []    # (group, {topic: [partition]}) that reached the "broker"

    def answer(api_key, api_version, corr, frame):
        if api_key != kafkawire.API_OFFSET_DELETE:
            return None
        group, topics = kafkawire.parse_offset_delete_request(frame)
        deletes.append((group, topics))
        return kafkawire.offset_delete_response(corr, 0, {t: {p: 0 for p in ps} for t, ps in topics.items()})

    relay.answer_requests(answer)
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P))
    name = f"vp-gadm-delete-{relay.port}"
    clients.create_topic(upstream.address, name, P)
    assert clients.partition_count(proxy.address, name) == V
    group = f"gad-{uuid.uuid4().hex[:8]}"
    assert standalone_commit(proxy.address, group, name, {5: 3, 6: 4}) == {5: 0, 6: 0}

    def delete(vps, corr):
        with kafkawire.connect(proxy.address, timeout=30) as s:
            _, top, topics = kafkawire.parse_offset_delete_response(kafkawire.round_trip(
                s, kafkawire.offset_delete_request(corr, group, {name: vps})))
        return top, topics.get(name, {})

    member = Heartbeats(join(proxy.address, group, name))
    try:
        top, codes = delete([5, 6], 71)
        assert (top, codes) == (0, {5: GROUP_SUBSCRIBED_TO_TOPIC, 6: GROUP_SUBSCRIBED_TO_TOPIC}), (
            f"OffsetDelete of VPs 5, 6 while {group} is subscribed to {name}: top {top}, {codes} "
            "(Kafka: GROUP_SUBSCRIBED_TO_TOPIC)")
        assert deletes == [], f"OffsetDelete sent upstream while the group is subscribed: {deletes}"
    finally:
        member.close()
    print(f"{group} after its member left: {wait_group_empty(upstream.address, group)}")

    top, codes = delete([5, 6], 72)
    assert (top, codes) == (0, {5: 0, 6: 0}), f"OffsetDelete of an empty group's VPs 5, 6: top {top}, {codes}"
    assert deletes == [(f"{group}.kpr-vp-k1", {name: [1, 2]})], deletes


INTERVAL_MS = 1500


def test_derived_offsets_recommitted_while_members_commit(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    commits = []    # (monotonic time, group, {(topic, p): offset}) of OffsetCommits that reached the broker
    lock = threading.Lock()

    def observe(api_key, api_version, corr, frame):
        if api_key == kafkawire.API_OFFSET_COMMIT:
            group, offsets = kafkawire.parse_offset_commit_request(api_version, frame)
            with lock:
                commits.append((time.monotonic(), group, offsets))
        return None

    relay.answer_requests(observe)
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P),
                        extra={"kafka": {"derived_offset_refresh_interval_ms": INTERVAL_MS}})
    name = f"vp-gadm-keep-{relay.port}"
    clients.create_topic(upstream.address, name, P)
    assert clients.partition_count(proxy.address, name) == V
    group = f"gak-{uuid.uuid4().hex[:8]}"
    derived = f"{group}.kpr-vp-k1"

    consumer = join(proxy.address, group, name)
    try:
        # A member commits VP 5 (k = 1, physical 1) once, then only VP 1
        # (k = 0) and VP 6 (k = 1, physical 2). VP 6's offset is fresh at
        # every refresh, so re-committing it would only risk moving it
        # back: the refreshes carry VP 5 alone.
        consumer.commit(offsets=[TopicPartition(name, 5, 3)], asynchronous=False)
        time.sleep(0.2)
        start = time.monotonic()
        main_commits = 0
        while time.monotonic() - start < 4 * INTERVAL_MS / 1000 + 0.5:
            consumer.poll(0.05)
            consumer.commit(offsets=[TopicPartition(name, 1, 10 + main_commits),
                                     TopicPartition(name, 6, 10 + main_commits)], asynchronous=False)
            main_commits += 1
            time.sleep(0.05)
        elapsed = time.monotonic() - start
    finally:
        consumer.close()

    with lock:
        to_derived = [(t, offs) for t, g, offs in commits if g == derived and t >= start]
        others = sorted({g for _, g, _ in commits if g not in (group, derived)})
    refreshes = [t for t, offs in to_derived if (name, 1) in offs]
    print(f"{main_commits} commits of VPs 1, 6 in {elapsed:.1f}s; re-commits of {derived} at "
          f"{[round(t - start, 2) for t in refreshes]}")
    assert not others, f"commits to groups other than {group} and {derived}: {others}"
    for t, offs in to_derived:
        assert offs == {(name, 1): 3} or set(offs) == {(name, 2)}, (
            f"a commit to {derived} at {t - start:.2f}s: {offs} (re-commits carry VP 5's offset 3 alone)")
    assert len(refreshes) >= 2, (
        f"{derived} re-committed {len(refreshes)} times in {elapsed:.1f}s of k = 0 commits every "
        f"~0.1 s with a {INTERVAL_MS} ms refresh interval")
    gaps = [b - a for a, b in zip(refreshes, refreshes[1:])]
    assert all(g >= INTERVAL_MS / 1000 * 0.9 for g in gaps), f"re-commits closer than the interval: {gaps}"
    assert len(refreshes) <= elapsed * 1000 / INTERVAL_MS + 1, refreshes
    on_broker = virtual.committed_on_broker(upstream.address, derived)
    assert on_broker == {(name, 1): 3, (name, 2): 10 + main_commits - 1}, (
        f"{derived} on the broker after re-commits: {on_broker}")
    assert virtual.committed_on_broker(upstream.address, group) == {(name, 1): 10 + main_commits - 1}
