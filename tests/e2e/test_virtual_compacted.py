"""Compacted topics under a remapping rule are refused, never remapped.

Compaction keeps the last record of each key per physical partition, so
two sibling virtual partitions (VP 0 and VP 2 of a 4-over-2 topic both live
on physical partition 0) writing the same key would erase each other's
records, and one tombstone would delete both. The proxy therefore learns
each remapped topic's `cleanup.policy` (DescribeConfigs, which Tansu 0.6
answers with the policy given at creation) and treats a compacted one as it
treats a topic whose partition count contradicts its rule: an error for the
topic in Metadata, Produce and Fetch refused with INVALID_CONFIG, an
error-level log line; never passed through, which would mix the siblings.
CreateTopics asking for a compacted topic under a remapping rule is refused
with POLICY_VIOLATION, as Kafka refuses a topic its CreateTopicPolicy
rejects.

Kafka reports the effective `cleanup.policy` of every topic (the broker's
`log.cleanup.policy`, `delete` unless changed); Tansu reports only configs
given at creation, and no entry means Kafka's default, `delete`.
"""

import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

import clients
import harness
import kafkawire
import virtual

INVALID_CONFIG = 40
V, P = 4, 2


def create_with_config(address, name, partitions, config):
    admin = clients.admin(address)  # must outlive the future
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config)], request_timeout=30)
    futures[name].result(timeout=30)


def test_compacted_topic_under_a_rule_is_refused(broker, start_proxy):
    compacted = f"cmp-{uuid.uuid4().hex[:8]}"
    both = f"cmpdel-{uuid.uuid4().hex[:8]}"
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    create_with_config(broker.address, compacted, P, {"cleanup.policy": "compact"})
    create_with_config(broker.address, both, P, {"cleanup.policy": "compact,delete"})
    create_with_config(broker.address, plain, P, {"cleanup.policy": "delete"})
    proxy = start_proxy(mapping=virtual.mapping(100, 10, {compacted: (V, P), both: (V, P),
                                                          plain: (V, P)}),
                        metrics=True)

    # The same key in two siblings of physical partition 0.
    batch = kafkawire.record_batch([(b"same-key", b"value", [])])
    with kafkawire.connect(proxy.address) as s:
        _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
            s, kafkawire.produce_request(7, {compacted: {0: batch, 2: batch}}, version=8)))
    stored = virtual.read_all_direct(broker.address, compacted, range(P))
    assert stored == [], (
        f"two siblings' records with the same key written to one compacted physical "
        f"partition (compaction keeps one of them): {stored}; produce answers {res}")
    for vp in (0, 2):
        r = res[(compacted, vp)]
        assert r["error"] == INVALID_CONFIG, f"VP {vp} of compacted {compacted}: {r}"
        assert "compact" in (r["error_message"] or ""), f"VP {vp}: no message naming compaction: {r}"
    print(f"Produce VP 2: {res[(compacted, 2)]['error_message']}")

    # Fetch is refused too (no physical data served as VP data).
    with kafkawire.connect(proxy.address) as s:
        _, res = kafkawire.parse_fetch_v4_response(kafkawire.round_trip(
            s, kafkawire.fetch_v4_request(8, {compacted: {0: 0, 2: 0}})))
    assert res[(compacted, 0)]["error"] == INVALID_CONFIG, res
    assert res[(compacted, 2)]["error"] == INVALID_CONFIG, res

    # Metadata: an error for the compacted topics, the plain one remapped.
    md = clients.list_topics(proxy.address)
    for name in (compacted, both):
        t = md.topics.get(name)
        assert t is not None and t.error is not None and t.error.code() == INVALID_CONFIG, (
            f"{name} (compacted) in metadata: {t.error if t else 'missing'}, "
            f"{len(t.partitions) if t else 0} partitions")
    assert md.topics[plain].error is None and len(md.topics[plain].partitions) == V

    # A client's producer gets an error; nothing reaches the broker.
    errors = []
    from confluent_kafka import Producer
    producer = Producer(clients.confluent_conf(proxy.address, **{"message.timeout.ms": 5000}))
    producer.produce(both, key=b"k", value=b"x", partition=1, on_delivery=lambda e, m: errors.append(e))
    producer.flush(15)
    assert errors and errors[0] is not None, errors
    assert virtual.read_all_direct(broker.address, both, range(P)) == []

    # The plain topic under the same kind of rule still works, siblings apart.
    reports = virtual.produce_confluent_full(proxy.address, plain, [(0, b"k", b"v0", []),
                                                                    (2, b"k", b"v2", [])])
    assert [p for p, _ in reports] == [0, 2]
    assert [m.value for m in virtual.read_vp_confluent(proxy.address, plain, 2)] == [b"v2"]

    line = proxy.wait_for_log(rf"ERROR.*{compacted}.*compact", timeout=10)
    print(f"proxy: {line}")
    refused = proxy.metrics().get("kafka_proxy_topics_compacted_refused")
    assert refused == 2, f"kafka_proxy_topics_compacted_refused = {refused}, want 2"

    # --check-config lists them.
    out = virtual.run([str(harness.PROXY_BIN), "--check-config", "-c", str(proxy.config_path)])
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line.split(":")[0].strip(): line for line in out.stdout.splitlines() if ":" in line}
    for name in (compacted, both):
        assert "COMPACTED" in lines.get(name, ""), f"--check-config on {name}: {lines.get(name)}\n{out.stdout}"
    assert "4 virtual -> 2 physical" in lines.get(plain, ""), out.stdout
    print("\n".join(lines[n] for n in (compacted, plain)))


@pytest.mark.parametrize("policy", ["compact", "delete,compact"])
def test_create_compacted_topic_under_a_rule_is_refused(broker, start_proxy, policy):
    prefix = f"cc{uuid.uuid4().hex[:6]}"
    proxy = start_proxy(mapping=virtual.mapping(100, 10, {f"{prefix}-.*": (V, P)}))
    name, plain = f"{prefix}-compacted", f"{prefix}-plain"
    admin = clients.admin(proxy.address)
    futures = admin.create_topics([
        NewTopic(name, num_partitions=V, replication_factor=1, config={"cleanup.policy": policy}),
        NewTopic(plain, num_partitions=V, replication_factor=1, config={"cleanup.policy": "delete"}),
    ], request_timeout=30)
    with pytest.raises(KafkaException) as e:
        futures[name].result(timeout=30)
    err = e.value.args[0]
    assert err.code() == kafkawire.POLICY_VIOLATION, f"CreateTopics {name} ({policy}): {err}"
    assert "compact" in err.str(), err
    print(f"confluent-kafka create_topics {policy}: {err.str()}")
    futures[plain].result(timeout=30)
    assert name not in clients.topic_names(broker.address)
    assert clients.partition_count(broker.address, plain) == P
    assert clients.wait_partition_count(proxy.address, plain, V) == V
    proxy.wait_for_log(rf"CreateTopics.*{name}.*compact", timeout=10)


def test_compacted_topic_created_after_start_is_refused_at_first_use(broker, start_proxy):
    """Created on the broker after the proxy's last refresh (30 s): the
    first request naming it has the proxy read its policy first."""
    name = f"late-{uuid.uuid4().hex[:8]}"
    proxy = start_proxy(mapping=virtual.mapping(100, 10, {"late-.*": (V, P)}))
    create_with_config(broker.address, name, P, {"cleanup.policy": "compact"})
    batch = kafkawire.record_batch([(b"same-key", b"value", [])])
    with kafkawire.connect(proxy.address) as s:
        _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
            s, kafkawire.produce_request(7, {name: {2: batch}}, version=8)))
    assert res[(name, 2)]["error"] == INVALID_CONFIG, res
    assert virtual.read_all_direct(broker.address, name, range(P)) == []
    proxy.wait_for_log(rf"ERROR.*{name}.*compact", timeout=10)
