"""What the proxy refuses on remapped topics, and how it says so.

Topic `big-<id>`: 10 physical partitions shown as 100 virtual (the default
rule), with records in VPs 0..19 before each test. Each refusal must come
back as the documented error, leave the data alone, and (where Kafka has a
field for it) carry a message:

- DeleteRecords (confluent AdminClient.delete_records, kafka-python
  delete_records, a raw request): POLICY_VIOLATION per partition, k = 0 VPs
  included (deleting from physical p deletes its siblings' records too);
- CreatePartitions: Tansu has no CreatePartitions, so the proxy does not
  offer it (ApiVersions) and clients refuse before sending; the topic keeps
  its partitions;
- a transactional produce to a k >= 1 VP (confluent transactional producer;
  raw AddPartitionsToTxn and raw transactional Produce): INVALID_TXN_STATE;
  the same to a k = 0 VP passes (Tansu has no EndTxn, so nothing commits);
- a magic 0/1 message set (raw Produce v3 and v8): UNSUPPORTED_FOR_MESSAGE_FORMAT;
- partition 150 of 100: kcat -p 150 and confluent-kafka are refused by the
  client itself (it knows the count from metadata); a raw Produce and Fetch
  get UNKNOWN_TOPIC_OR_PARTITION and the proxy logs
  "Virtual partition 150 out of range (max: 99)";
- an exact rule (20 over 4) naming a topic created on the broker with 6
  partitions: metadata error INVALID_PARTITIONS for that topic, and an
  error-level log line naming it.
"""

import time
import uuid

import kafka.errors
import kafka.structs
import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

import clients
import kafkawire
import virtual

V, P = 100, 10
SEEDED_VPS = range(20)


@pytest.fixture
def big(broker, start_proxy):
    """(proxy, topic, records {vp: [(offset, value)]}) with one record in
    each of VPs 0..19."""
    proxy = start_proxy(mapping=virtual.mapping(V, P), log_level="debug")
    name = f"big-{uuid.uuid4().hex[:8]}"
    clients.create_topic(broker.address, name, P)
    recs = [(vp, None, f"seed|{vp}".encode(), []) for vp in SEEDED_VPS]
    reports = virtual.produce_confluent_full(proxy.address, name, recs)
    return proxy, name, {vp: [(off, v)] for (vp, _, v, _), (_, off) in zip(recs, reports)}


def assert_untouched(broker, proxy, name, seeded):
    """Every seeded record still readable, nothing more on the broker."""
    direct = virtual.read_all_direct(broker.address, name, range(P))
    assert sorted(m.value for m in direct) == sorted(v for recs in seeded.values() for _, v in recs)
    for vp in (0, 5, 15):
        got = [(m.offset, m.value) for m in virtual.read_vp_confluent(proxy.address, name, vp)]
        assert got == seeded[vp], f"VP {vp}: {got}"


def test_delete_records_refused(broker, big):
    proxy, name, seeded = big
    # confluent-kafka: one k >= 1 and one k = 0 VP.
    admin = clients.admin(proxy.address)
    futures = admin.delete_records([TopicPartition(name, 15, 1), TopicPartition(name, 0, 1)],
                                   request_timeout=30)
    for tp, f in futures.items():
        with pytest.raises(KafkaException) as e:
            f.result(timeout=30)
        assert e.value.args[0].code() == 44, f"VP {tp.partition}: {e.value}"  # POLICY_VIOLATION

    # kafka-python.
    kp = clients.kafka_python_admin(proxy.address)
    try:
        with pytest.raises(kafka.errors.PolicyViolationError):
            kp.delete_records({kafka.structs.TopicPartition(name, 5): 1})
    finally:
        kp.close()

    # Raw: every partition of the request answered, each refused.
    with kafkawire.connect(proxy.address) as s:
        _, result = kafkawire.parse_delete_records_response(kafkawire.round_trip(
            s, kafkawire.delete_records_request(11, {name: {0: 1, 7: 1, 19: 1}})))
    assert {k: v[1] for k, v in result.items()} == {
        (name, 0): 44, (name, 7): 44, (name, 19): 44}, result
    line = proxy.wait_for_log(rf"DeleteRecords.*{name}.*refused")
    print(f"proxy: {line}")
    assert_untouched(broker, proxy, name, seeded)


def test_create_partitions_refused(broker, big):
    proxy, name, seeded = big
    # Tansu has no CreatePartitions (API 37): the proxy must not offer it.
    with kafkawire.connect(proxy.address) as s:
        _, keys = kafkawire.api_versions(s, 0, 1)
    assert kafkawire.API_CREATE_PARTITIONS not in keys, (
        f"proxy offers CreatePartitions {keys[37]}, which its upstream (Tansu) lacks")

    clients.create_partitions_refused(proxy.address, name, 200, request_timeout=15)

    assert clients.partition_count(proxy.address, name) == V
    assert clients.partition_count(broker.address, name) == P
    assert_untouched(broker, proxy, name, seeded)


def test_transactional_produce_to_k1_refused(broker, big):
    proxy, name, seeded = big
    # confluent-kafka's transactional producer: AddPartitionsToTxn for VP 15
    # is refused, which librdkafka treats as fatal; the commit reports it.
    producer = Producer(clients.confluent_conf(proxy.address, **{
        "transactional.id": f"tx-{uuid.uuid4().hex[:8]}", "message.timeout.ms": 15000,
        "transaction.timeout.ms": 15000}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(name, value=b"tx|15", partition=15)
    with pytest.raises(KafkaException) as e:
        producer.commit_transaction(30)
    err = e.value.args[0]
    assert err.code() == 48, f"commit of a transaction touching VP 15: {err}"  # INVALID_TXN_STATE
    print(f"confluent-kafka: {err}")
    line = proxy.wait_for_log(rf"AddPartitionsToTxn.*{name}|{name}.*AddPartitionsToTxn")
    print(f"proxy: {line}")

    # Raw: InitProducerId, AddPartitionsToTxn, transactional Produce.
    txn = f"raw-tx-{uuid.uuid4().hex[:8]}"
    with kafkawire.connect(proxy.address) as s:
        _, err, pid, epoch = kafkawire.parse_init_producer_id_response(kafkawire.round_trip(
            s, kafkawire.init_producer_id_request(21, txn)))
        assert err == 0 and pid >= 0, f"InitProducerId: error {err}"
        _, added = kafkawire.parse_add_partitions_to_txn_response(kafkawire.round_trip(
            s, kafkawire.add_partitions_to_txn_request(22, txn, pid, epoch, {name: [15]})))
        assert added == {(name, 15): kafkawire.INVALID_TXN_STATE}, added
        _, added = kafkawire.parse_add_partitions_to_txn_response(kafkawire.round_trip(
            s, kafkawire.add_partitions_to_txn_request(23, txn, pid, epoch, {name: [5]})))
        assert added == {(name, 5): 0}, f"a k = 0 VP in a transaction: {added}"

        def txn_produce(corr, vp, seq):
            batch = kafkawire.record_batch([(None, f"rawtx|{vp}".encode(), [])],
                                           producer_id=pid, producer_epoch=epoch,
                                           base_sequence=seq, transactional=True)
            _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
                s, kafkawire.produce_request(corr, {name: {vp: batch}}, version=8,
                                             transactional_id=txn)))
            return res[(name, vp)]

        refused = txn_produce(24, 15, 0)
        assert refused["error"] == kafkawire.INVALID_TXN_STATE, refused
        print(f"raw transactional produce to VP 15: {refused}")
        accepted = txn_produce(25, 5, 0)
        assert accepted["error"] == 0, f"transactional produce to k = 0 VP 5: {accepted}"

    # Nothing of the refused transactions reached physical partition 5.
    direct = virtual.read_all_direct(broker.address, name, [5])
    assert [m.value for m in direct if virtual.tag_of(m.headers) == 15] == [seeded[15][0][1]], (
        f"physical 5: {[(m.offset, m.value, m.headers) for m in direct]}")


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_message_format_refused(broker, big, magic):
    proxy, name, seeded = big
    with kafkawire.connect(proxy.address) as s:
        for corr, (version, vp) in enumerate([(3, 15), (3, 5), (8, 15), (8, 5)], start=31):
            msgs = kafkawire.message_set([(b"k", f"magic{magic}|{vp}".encode())], magic=magic)
            _, res = kafkawire.parse_produce_response(version, kafkawire.round_trip(
                s, kafkawire.produce_request(corr, {name: {vp: msgs}}, version=version)))
            r = res[(name, vp)]
            assert r["error"] == kafkawire.UNSUPPORTED_FOR_MESSAGE_FORMAT, (
                f"Produce v{version} magic {magic} to VP {vp}: {r}")
            if version >= 8:
                assert r["error_message"], f"Produce v8 magic {magic} to VP {vp}: no message"
                print(f"VP {vp}: {r['error_message']}")
    assert_untouched(broker, proxy, name, seeded)


def test_partition_out_of_range(broker, big):
    proxy, name, seeded = big
    # kcat: librdkafka knows there are 100 partitions and refuses itself.
    out = virtual.run(["kcat", "-b", proxy.address, "-P", "-t", name, "-p", "150"],
                      input="out-of-range\n")
    assert out.returncode != 0, f"kcat -P -p 150 succeeded: {out.stdout}{out.stderr}"
    print(f"kcat -P -p 150: {out.stderr.strip()}")
    out = virtual.run(["kcat", "-b", proxy.address, "-C", "-t", name, "-p", "150", "-e",
                       "-o", "beginning"])
    assert out.returncode != 0 and "150" in out.stderr, f"kcat -C -p 150: {out.stdout}{out.stderr}"
    print(f"kcat -C -p 150: {out.stderr.strip()}")

    # confluent-kafka: the same, as a delivery error.
    errors = []
    producer = Producer(clients.confluent_conf(proxy.address, **{"message.timeout.ms": 10000}))
    producer.produce(name, value=b"x", partition=150, on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(20) == 0
    assert errors and errors[0] is not None, errors
    print(f"confluent-kafka partition 150: {errors[0]}")

    # Raw requests reach the proxy: Produce v8 (with a message) and Fetch,
    # beside a valid VP in the same request.
    mark = proxy.log_mark()
    with kafkawire.connect(proxy.address) as s:
        batch = kafkawire.record_batch([(None, b"raw|15", [])])
        _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
            s, kafkawire.produce_request(41, {name: {150: batch, 15: batch}}, version=8)))
        assert res[(name, 150)]["error"] == kafkawire.UNKNOWN_TOPIC_OR_PARTITION, res
        assert "Virtual partition 150 out of range (max: 99)" in (
            res[(name, 150)]["error_message"] or ""), res
        assert res[(name, 15)]["error"] == 0, f"VP 15 beside VP 150: {res}"
        _, res = kafkawire.parse_fetch_v4_response(kafkawire.round_trip(
            s, kafkawire.fetch_v4_request(42, {name: {150: 0, 15: 0}})))
        assert res[(name, 150)]["error"] == kafkawire.UNKNOWN_TOPIC_OR_PARTITION, res
        assert res[(name, 15)]["error"] == 0, res
        values = [r[2] for b in kafkawire.parse_batches(res[(name, 15)]["records"])
                  for r in virtual.batch_records(b)]
        assert values == [b"seed|15", b"raw|15"], f"VP 15 fetched beside VP 150: {values}"
    produce_line = proxy.wait_for_log(r"Produce.*Virtual partition 150 out of range \(max: 99\)",
                                      since=mark)
    fetch_line = proxy.wait_for_log(r"Fetch.*Virtual partition 150 out of range \(max: 99\)",
                                    since=mark)
    print(f"proxy: {produce_line}\nproxy: {fetch_line}")


def test_mismatched_physical_count(broker, start_proxy):
    name = f"mm-{uuid.uuid4().hex[:8]}"
    ok = f"mmok-{uuid.uuid4().hex[:8]}"
    broker.create_topic_cli(name, 6)      # the rule below says 4
    broker.create_topic_cli(ok, 4)
    proxy = start_proxy(mapping=virtual.mapping(V, P, {name: (20, 4), ok: (20, 4)}))

    md = clients.list_topics(proxy.address)
    t = md.topics.get(name)
    assert t is not None and t.error is not None and t.error.code() == 37, (
        f"{name}: 6 physical partitions, rule 20 over 4: metadata says "
        f"{t.error if t else 'missing'}, {len(t.partitions) if t else 0} partitions")
    assert len(md.topics[ok].partitions) == 20 and md.topics[ok].error is None

    kmd = clients.kcat_metadata(proxy.address, name)
    [kt] = [x for x in kmd["topics"] if x["topic"] == name]
    assert kt.get("error"), f"kcat -L shows {name} without error: {kt}"
    print(f"kcat: {kt.get('error')}")

    line = proxy.wait_for_log(rf"error.*{name}.*", timeout=10)
    assert "6" in line and "4" in line, line
    print(f"proxy: {line}")

    # A producer to it gets an error, not records on a wrongly mapped partition.
    errors = []
    producer = Producer(clients.confluent_conf(proxy.address, **{"message.timeout.ms": 5000}))
    producer.produce(name, value=b"x", partition=1, on_delivery=lambda e, m: errors.append(e))
    producer.flush(15)
    assert errors and errors[0] is not None, errors
    assert virtual.read_all_direct(broker.address, name, range(6)) == []
    time.sleep(0)  # keep the producer alive until here
