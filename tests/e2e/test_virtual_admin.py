"""Topic administration through the proxy under mapping rules.

CreateTopics with a rule's V partitions creates the rule's P physical ones
(checked on the broker directly) and shows V through the proxy; another
count for a topic named by an exact or regex rule is refused with
INVALID_PARTITIONS and a message naming the rule, and nothing is created;
under the default rule counts other than V and P pass through 1:1.
confluent-kafka and kafka-python.

CreatePartitions on a remapped topic is refused with INVALID_PARTITIONS and
a message. Tansu 0.6 has no CreatePartitions, so the proxy (rightly) does
not offer it and clients refuse before sending; to see the proxy's own
refusal, a relay between proxy and broker adds CreatePartitions to the
broker's ApiVersions answer. The proxy answers a CreatePartitions for a
remapped topic itself, so nothing of it reaches Tansu (the relay counts).
"""

import uuid

import kafka.errors
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

import clients
import kafkawire
import virtual

ID = uuid.uuid4().hex[:6]
EXACT = f"orders-{ID}"          # exact rule 20 over 4
MAPPING = virtual.mapping(100, 10, {EXACT: (20, 4), "audit\\..*": (50, 5)})


def create_confluent(address, name, partitions):
    """None on success, else the KafkaError."""
    client = clients.admin(address)  # must outlive the future
    futures = client.create_topics([NewTopic(name, num_partitions=partitions,
                                             replication_factor=1)], request_timeout=30)
    try:
        futures[name].result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0]


@pytest.mark.parametrize("name,asked,physical", [
    (EXACT, 20, 4),                         # exact rule
    (f"audit.{ID}", 50, 5),                 # regex rule
    (f"dflt-{ID}", 100, 10),                # default rule
    (f"plain-{ID}", 7, 7),                  # default rule, another count: 1:1
])
def test_create_topics_confluent(broker, start_proxy, name, asked, physical):
    proxy = start_proxy(mapping=MAPPING)
    err = create_confluent(proxy.address, name, asked)
    assert err is None, f"CreateTopics {name} with {asked}: {err}"
    assert clients.wait_partition_count(broker.address, name, physical) == physical, (
        f"{name}: {clients.partition_count(broker.address, name)} partitions on the broker, "
        f"expected {physical}")
    assert clients.wait_partition_count(proxy.address, name, asked) == asked
    # Usable at once: a record to the last VP lands on physical (V-1) % P.
    vp = asked - 1
    [(p, off)] = virtual.produce_confluent_full(proxy.address, name, [(vp, None, b"new", [])])
    direct = virtual.read_all_direct(broker.address, name, [vp % physical])
    assert [(m.offset, m.value) for m in direct] == [(off, b"new")]


@pytest.mark.parametrize("case", ["exact", "exact-as-physical", "regex"])
def test_create_topics_refused(broker, start_proxy, case):
    """A count other than the rule's V, for a topic an exact or regex rule
    names: INVALID_PARTITIONS, a message naming the rule, nothing created.
    "exact-as-physical" asks for the rule's P (4 of 20 over 4)."""
    if case == "regex":
        name, asked, rule = f"audit.{uuid.uuid4().hex[:6]}", 12, "audit\\..*"
        proxy = start_proxy(mapping=MAPPING)
    else:
        name = f"orders-{ID}-{uuid.uuid4().hex[:4]}"
        asked, rule = (7 if case == "exact" else 4), name
        proxy = start_proxy(mapping=virtual.mapping(100, 10, {name: (20, 4)}))
    err = create_confluent(proxy.address, name, asked)
    assert err is not None and err.code() == 37, (
        f"CreateTopics {name} with {asked} partitions: {err} (expected INVALID_PARTITIONS)")
    print(f"confluent-kafka: {err.str()}")
    assert rule in err.str(), f"the message does not name the rule {rule!r}: {err.str()}"
    assert clients.partition_count(broker.address, name) is None, f"{name} created on the broker"

    kp = clients.kafka_python_admin(proxy.address)
    try:
        result = kp.create_topics({name: {"num_partitions": asked, "replication_factor": 1}},
                                  timeout_ms=30000, raise_errors=False)
    finally:
        kp.close()
    [t] = result["topics"]
    print(f"kafka-python: {t}")
    assert t["error_code"] == 37 and rule in (t.get("error_message") or ""), t
    assert clients.partition_count(broker.address, name) is None, f"{name} created on the broker"


def test_create_topics_kafka_python(broker, start_proxy):
    proxy = start_proxy(mapping=MAPPING)
    name = f"audit.kp{uuid.uuid4().hex[:6]}"
    kp = clients.kafka_python_admin(proxy.address)
    try:
        result = kp.create_topics({name: {"num_partitions": 50, "replication_factor": 1}},
                                  timeout_ms=30000, raise_errors=False)
        assert [t["error_code"] for t in result["topics"]] == [0], result
    finally:
        kp.close()
    assert clients.wait_partition_count(broker.address, name, 5) == 5
    assert clients.wait_partition_count(proxy.address, name, 50) == 50


def test_create_partitions_refused_by_the_proxy(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    relay.offer_apis({kafkawire.API_CREATE_PARTITIONS: (0, 3)})
    proxy = start_proxy(upstream=relay.address, mapping=MAPPING)
    name = f"dflt-cp-{relay.port}"
    clients.create_topic(upstream.address, name, 10)     # 100 virtual
    assert clients.partition_count(proxy.address, name) == 100
    with kafkawire.connect(proxy.address) as s:
        _, keys = kafkawire.api_versions(s, 0, 1)
    assert kafkawire.API_CREATE_PARTITIONS in keys, (
        "precondition: the proxy offers CreatePartitions once the broker does")

    err, kp_error = clients.create_partitions_refused(proxy.address, name, 200)
    assert err.code() == 37, f"create_partitions on a remapped topic: {err}"
    assert name in err.str() or "remapped" in err.str() or "virtual" in err.str(), err.str()
    assert isinstance(kp_error, kafka.errors.InvalidPartitionsError), repr(kp_error)

    with kafkawire.connect(proxy.address) as s:
        _, result = kafkawire.parse_create_partitions_response(kafkawire.round_trip(
            s, kafkawire.create_partitions_request(51, {name: 20})))
    code, message = result[name]
    assert code == kafkawire.INVALID_PARTITIONS and message, result
    print(f"raw: {result}")
    assert relay.requests.get(kafkawire.API_CREATE_PARTITIONS, 0) == 0, (
        "a CreatePartitions for a remapped topic reached the broker")
    assert clients.partition_count(upstream.address, name) == 10
    assert clients.partition_count(proxy.address, name) == 100
