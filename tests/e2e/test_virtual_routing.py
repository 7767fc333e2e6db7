"""Issue 8, findings 9 and 7: a remapped topic never falls back to
pass-through, and follower fetching (KIP-392) does not loop.

A relay (relay.py) sits between proxy and Tansu: every upstream connection
of the proxy, its own metadata refreshes included, goes through it. It can
make a topic look missing in Metadata answers, and answer fetches carrying a
client rack id as a rack-aware leader does (preferred_read_replica, no
records).
"""

import struct
import time
import uuid

from confluent_kafka import TopicCollection

import clients
import kafkawire
import virtual

RACK = "az1"
V, P = 4, 2     # default rule: 4 virtual on 2 physical partitions


def proxy_and_topic(start_proxy, broker_behind_relay, prefix, partitions=P, shown=V, **proxy_args):
    """A proxy in front of the relay (rule V:P) and a new topic of
    `partitions` physical partitions, once the proxy shows `shown`.
    -> (proxy, topic name)."""
    upstream, relay = broker_behind_relay
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P), **proxy_args)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    clients.create_topic(upstream.address, name, partitions)
    assert clients.wait_partition_count(proxy.address, name, shown) == shown
    return proxy, name


def produce_siblings(proxy, name, count=5):
    """count records on VP 0 (k = 0, untagged on PP 0) and VP 2 (k = 1,
    tagged, on the same PP 0). -> the values of each."""
    values = {vp: [f"vp{vp}-{i}" for i in range(count)] for vp in (0, 2)}
    for vp, lines in values.items():
        virtual.kcat_produce(proxy.address, name, lines, partition=vp)
    return values


def fetch_v4(address, name, vp, offset=0):
    """One raw Fetch v4 of one partition: (error, [(offset, key, value, headers)])."""
    with kafkawire.connect(address, timeout=10) as s:
        payload = kafkawire.round_trip(s, kafkawire.fetch_v4_request(7, {name: {vp: offset}}))
    _, parts = kafkawire.parse_fetch_v4_response(payload)
    part = parts[(name, vp)]
    records = [r for b in kafkawire.parse_batches(part["records"]) if b["magic"] == 2
               for r in virtual.batch_records(b)]
    return part["error"], records


def fetch_by_id(address, topic_id, vp, offset=0):
    """One raw Fetch v13-v15 (by topic id) of one partition: (error, records)."""
    with kafkawire.connect(address, timeout=10) as s:
        payload = kafkawire.round_trip(s, kafkawire.api_versions_request(0, 1))
        _, _, keys = kafkawire.parse_api_versions_response(0, payload)
        version = min(keys[kafkawire.API_FETCH][1], 15)
        assert version >= 13, f"the proxy offers Fetch up to v{version}"
        payload = kafkawire.round_trip(s, kafkawire.fetch_by_id_request(7, version, {topic_id: {vp: offset}}))
    _, _, parts = kafkawire.parse_fetch_by_id_response(payload)
    part = parts[(topic_id, vp)]
    records = [r for b in kafkawire.parse_batches(part["records"]) if b["magic"] == 2
               for r in virtual.batch_records(b)]
    return part["error"], records


def topic_id_on_broker(broker_address, name):
    admin = clients.admin(broker_address)  # kept alive until the answer is in
    tid = admin.describe_topics(TopicCollection([name]))[name].result(30).topic_id
    return struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())


def test_remapped_topic_missing_from_metadata_never_passes_through(broker_behind_relay, start_proxy):
    """While the proxy's metadata refreshes say the topic does not exist
    (UNKNOWN_TOPIC_OR_PARTITION, as a broker whose metadata cache lacks a
    topic answers in Kafka while it propagates, or after a deletion), a k = 0
    consumer that already knows its partition keeps fetching it. It must get
    its own records or a retriable error, never its siblings' (tagged)
    records of the same physical partition."""
    upstream, relay = broker_behind_relay
    proxy, name = proxy_and_topic(start_proxy, broker_behind_relay, "fallback",
                                  extra={"kafka": {"metadata_refresh_interval_ms": 200}})
    values = produce_siblings(proxy, name)

    error, records = fetch_v4(proxy.address, name, 0)
    assert error == 0 and [r[2].decode() for r in records] == values[0], (
        f"precondition: VP 0 reads its own records: error {error}, {records}")

    topic_id = topic_id_on_broker(upstream.address, name)
    relay.hide_topic(name)
    deadline = time.monotonic() + 10
    while relay.hidden_answers(name) < 3:
        assert time.monotonic() < deadline, "the proxy did not refresh its metadata through the relay"
        time.sleep(0.1)
    # Kafka's retriable answers while metadata propagates.
    retriable = {3, 5, 6}   # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER
    seen = []
    for i in range(10):
        # Fetch v4 names the topic; v13+ names it by id, which the proxy's
        # view drops with the topic.
        error, records = fetch_v4(proxy.address, name, 0) if i % 2 == 0 else \
            fetch_by_id(proxy.address, topic_id, 0)
        seen.append(error)
        got = [r[2].decode() for r in records]
        tagged = [r for r in records if virtual.tag_of(r[3]) is not None]
        assert not tagged and not any(v.startswith("vp2-") for v in got), (
            f"VP 0 received its sibling VP 2's records while the topic looked missing: {got}")
        assert error in retriable | {0}, f"VP 0 answered with error {error}"
        if error == 0:
            assert got == values[0], f"VP 0: {got}"
        time.sleep(0.1)
    with kafkawire.connect(proxy.address) as s:
        _, _, topics = kafkawire.metadata_v1(s, [name])
    shown = topics[name]
    assert shown["error"] != 0 or len(shown["partitions"]) == V, (
        f"Metadata shows the remapped topic with {len(shown['partitions'])} partitions")

    relay.show_topic(name)
    deadline = time.monotonic() + 10
    while True:
        error, records = fetch_v4(proxy.address, name, 2)
        if error == 0:
            break
        assert time.monotonic() < deadline, f"VP 2 still answers error {error}"
        time.sleep(0.2)
    assert [r[2].decode() for r in records] == values[2]
    print(f"errors while hidden: {seen}")


def node_id(address):
    with kafkawire.connect(address) as s:
        brokers, _, _ = kafkawire.metadata_v1(s)
    assert len(brokers) == 1, brokers
    return brokers[0][0]


def test_client_rack_is_not_passed_through_on_remapped_fetches(broker_behind_relay, start_proxy):
    """A consumer with client.rack fetching a remapped topic. The relay
    answers every fetch carrying that rack id as a rack-aware leader does
    whose partition has a replica in the client's rack: a preferred read
    replica and no records (Kafka: ReplicaManager.findPreferredReadReplica
    with RackAwareReplicaSelector; the leader keeps answering so for every
    fetch that reaches it). The proxy cannot follow a preferred replica per
    virtual partition, so it must not send the client's rack id upstream;
    otherwise the consumer never gets data."""
    upstream, relay = broker_behind_relay
    proxy, name = proxy_and_topic(start_proxy, broker_behind_relay, "rack")
    values = produce_siblings(proxy, name)
    relay.prefer_replica(RACK, node_id(upstream.address), once=False)

    msgs = virtual.read_vp_confluent(proxy.address, name, 2, timeout=20, **{"client.rack": RACK})
    assert [m.value.decode() for m in msgs] == values[2]
    assert relay.fetches_with_rack == 0, (
        f"{relay.fetches_with_rack} upstream fetches carried the client's rack id")


def test_proxy_client_rack_follows_the_preferred_replica(broker_behind_relay, start_proxy):
    """kafka.client_rack: the proxy sends its own rack id on its upstream
    fetches of remapped topics and follows the preferred read replica the
    leader names, per physical partition, as the Java consumer does
    (FetchCollector: subscriptions.updatePreferredReadReplica, expiring after
    metadata.max.age.ms).

    Limitation: a single Tansu has one node id, so the "replica" the relay
    names is the leader itself; the relay rewrites only the first answer per
    partition. The test asserts that the proxy sent its rack id, took the
    preference (its log names the node and partition), re-fetched, and got
    the data without a loop (few fetches)."""
    upstream, relay = broker_behind_relay
    proxy, name = proxy_and_topic(start_proxy, broker_behind_relay, "prack", log_level="debug",
                                  extra={"kafka": {"client_rack": RACK}})
    values = produce_siblings(proxy, name)
    node = node_id(upstream.address)
    relay.prefer_replica(RACK, node, once=True)
    mark = proxy.log_mark()

    msgs = virtual.read_vp_confluent(proxy.address, name, 2, timeout=20)
    assert [m.value.decode() for m in msgs] == values[2]
    assert relay.fetches_with_rack > 0, "the proxy did not send kafka.client_rack upstream"
    assert any(p == 0 for _, p in relay.preferred), relay.preferred
    proxy.wait_for_log(rf"preferred read replica {node}\b.*{name}\[0\]", since=mark)
    proxy.wait_for_log(rf'Fetch -> .*Replica {{ node: {node}, topic: "{name}", partition: 0 }}', since=mark)
    assert relay.fetches_with_rack < 20, f"{relay.fetches_with_rack} fetches: a loop"


def read_partitions_confluent(bootstrap, name, partitions, timeout=20.0):
    """{partition: [value]} of every record of `partitions`, read by one
    consumer assigned them all (so its fetches name them together)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
    consumer = Consumer(clients.confluent_conf(bootstrap, **{
        "group.id": "kpr-e2e-routing", "enable.auto.commit": False,
        "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
    try:
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        out = {p: [] for p in partitions}
        done = set()
        deadline = time.monotonic() + timeout
        while done != set(partitions):
            assert time.monotonic() < deadline, f"not read to the end in {timeout}s: {out}"
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is not None:
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    done.add(msg.partition())
                else:
                    out[msg.partition()].append(msg.value().decode())
        return out
    finally:
        consumer.close()


def test_fetch_split_by_preferred_replica(broker_behind_relay, start_proxy):
    """kafka.client_rack, a consumer of VP 0 (PP 0) and VP 1 (PP 1) in one
    fetch. The relay names node 999 as PP 0's preferred replica, once; the
    cluster has no such broker, so the proxy fetches PP 0 from the leader
    (as the Java consumer does with a preferred replica missing from its
    metadata), but it must split the upstream fetch: PP 0 routed by its
    preference, PP 1 by its leader, the answers combined. Both partitions'
    records arrive."""
    _, relay = broker_behind_relay
    proxy, name = proxy_and_topic(start_proxy, broker_behind_relay, "split", log_level="debug",
                                  extra={"kafka": {"client_rack": RACK}})
    values = {vp: [f"vp{vp}-{i}" for i in range(5)] for vp in (0, 1)}
    for vp, lines in values.items():
        virtual.kcat_produce(proxy.address, name, lines, partition=vp)
    relay.prefer_replica(RACK, 999, once=True, partitions={0})
    mark = proxy.log_mark()

    got = read_partitions_confluent(proxy.address, name, [0, 1])
    assert got == values, got
    assert [p for _, p in relay.preferred] == [0], relay.preferred
    proxy.wait_for_log(rf'Fetch -> .*Replica {{ node: 999, topic: "{name}", partition: 0 }}', since=mark)
    proxy.wait_for_log(rf'Fetch -> .*Leader {{ topic: "{name}", partition: 1 }}', since=mark)


def test_passthrough_fetch_follows_the_preferred_replica(broker_behind_relay, start_proxy):
    """A pass-through topic, a consumer with client.rack: its fetches go
    upstream as they came (rack id included); when the leader names a
    preferred read replica, the client follows it to that node id, which is
    the proxy again: the proxy must route that client's next fetches of the
    partition to the replica (Java consumer's behaviour, KIP-392), not to
    the leader, which would answer the same again.

    Limitation: one Tansu, one node id; the relay rewrites only the first
    answer per partition. Asserted: the proxy took the preference (log) and
    the data arrives without a loop."""
    upstream, relay = broker_behind_relay
    # Not the rule's P: a 1:1 topic.
    proxy, name = proxy_and_topic(start_proxy, broker_behind_relay, "prpt", partitions=3, shown=3,
                                  log_level="debug")
    lines = [f"pt-{i}" for i in range(5)]
    virtual.kcat_produce(proxy.address, name, lines, partition=1)
    node = node_id(upstream.address)
    relay.prefer_replica(RACK, node, once=True)
    mark = proxy.log_mark()

    msgs = virtual.read_vp_confluent(proxy.address, name, 1, timeout=20, **{"client.rack": RACK})
    assert [m.value.decode() for m in msgs] == lines
    assert relay.preferred, "precondition: the relay named a preferred replica"
    proxy.wait_for_log(rf"preferred read replica {node}\b.*{name}\[1\]", since=mark)
    proxy.wait_for_log(rf'Fetch -> .*Replica {{ node: {node}, topic: "{name}", partition: 1 }}', since=mark)
    assert relay.fetches_with_rack < 20, f"{relay.fetches_with_rack} fetches: a loop"
