"""Record batches damaged in transit are never laundered.

The proxy rewrites a batch it tags (every batch to a k >= 1 virtual
partition, and k = 0 batches whose records carry a sibling's kpr.vp tag),
and a rewritten batch gets a fresh CRC-32C. Rewriting a damaged batch would
turn it into one that every reader after the proxy takes as sound. So a
batch is checked before it is rewritten: one that fails is answered
CORRUPT_MESSAGE for its partition, nothing of that partition is written,
the proxy logs it once and counts it in kafka_proxy_corrupt_batches_total.

Apache Kafka checks every produced batch's CRC itself (LogValidator →
DefaultRecordBatch.ensureValid → CorruptRecordException, CORRUPT_MESSAGE).
Tansu 0.6 does not: it stores a batch whose CRC is wrong. That is exactly
why the proxy must not launder: these tests read the physical topic
directly to see that nothing of a refused batch was stored.

On fetch, a batch holding several virtual partitions' records is split
into one batch per owner, which re-seals too. A mixed batch that fails its
CRC is not split: its owners are answered CORRUPT_MESSAGE at its offset
(the Java consumer then stops there with "Encountered corrupt message when
fetching offset N", as it would reading a corrupt batch from Kafka;
librdkafka reports error 2, "Broker: Invalid message"), siblings move
past it.

20 virtual over 4 physical partitions; batches are hand-built
(kafkawire), uncompressed (the codecs are covered by the unit tests in
src/remap/produce.rs and src/remap/fetch.rs).
"""

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

import clients
import kafkawire
import virtual

V, P = 20, 4
CORRUPT_MESSAGE = 2


def flip_crc(batch):
    """The batch with one bit of its stored CRC flipped."""
    b = bytearray(batch)
    b[18] ^= 0x01
    return bytes(b)


def flip_value(batch, value):
    """The batch with one letter of `value` (in a record) flipped in case:
    the records still decode, but the stored CRC no longer matches."""
    b = bytearray(batch)
    at = bytes(b).index(value, 61)
    b[at] ^= 0x20
    return bytes(b)


def stored_values(broker, name, partition):
    """Every record value of a physical partition, read from the broker
    itself with raw fetches, and whether each batch's CRC holds."""
    out = []
    for b in virtual.raw_batches(broker.address, name, partition):
        out.extend((value, b["crc_ok"]) for _, _, value, _ in b["records"])
    return out


@pytest.fixture
def corrupt_topic(broker, start_proxy):
    proxy = start_proxy(mapping=virtual.mapping(V, P), metrics=True)
    name = f"corrupt-{uuid.uuid4().hex[:8]}"
    clients.create_topic(broker.address, name, P)
    return proxy, name


@pytest.mark.parametrize("version", [3, 8])
def test_damaged_batches_are_refused_before_they_are_rewritten(broker, corrupt_topic, version):
    proxy, name = corrupt_topic
    mark = proxy.log_mark()
    before = proxy.metrics().get("kafka_proxy_corrupt_batches_total", 0)
    tag = f"v{version}"

    def batch(value, headers=()):
        return kafkawire.record_batch([(None, value, list(headers))])

    sent = {
        # VP 5: k = 1 on physical 1, its CRC damaged.
        5: flip_crc(batch(f"{tag}|crc|5".encode())),
        # VP 6: k = 1 on physical 2, a byte of a value damaged.
        6: flip_value(batch(f"{tag}|value|6".encode()), f"{tag}|value|6".encode()),
        # VP 3: k = 0 on physical 3, but its record carries VP 7's tag (a
        # record read through the proxy and produced again): it would be
        # re-tagged, so it is checked too.
        3: flip_value(batch(f"{tag}|foreign|3".encode(), [("kpr.vp", b"7")]),
                      f"{tag}|foreign|3".encode()),
        # VP 1: k = 0 on physical 1, sound: stored whatever its neighbours.
        1: batch(f"{tag}|clean|1".encode()),
        # VP 9: k = 2 on physical 1, sound: tagged and stored.
        9: batch(f"{tag}|clean|9".encode()),
    }
    with kafkawire.connect(proxy.address) as s:
        _, res = kafkawire.parse_produce_response(version, kafkawire.round_trip(
            s, kafkawire.produce_request(40 + version, {name: sent}, version=version)))
    for vp in (5, 6, 3):
        r = res[(name, vp)]
        assert r["error"] == CORRUPT_MESSAGE, f"Produce v{version} of a damaged batch to VP {vp}: {r}"
        if version >= 8:
            msg = r["error_message"] or ""
            assert "CRC-32C" in msg and f"virtual partition {vp}" in msg and name in msg, (
                f"VP {vp}: error message {msg!r}")
            print(f"VP {vp}: {msg}")
    for vp in (1, 9):
        assert res[(name, vp)]["error"] == 0, f"Produce v{version} of a sound batch to VP {vp}: {res[(name, vp)]}"

    # The broker holds the sound batches and nothing of the damaged ones.
    stored = {p: stored_values(broker, name, p) for p in range(P)}
    values = [v for p in stored for v, _ in stored[p]]
    for what in ("crc|5", "value|6", "foreign|3"):
        # Lower case: the damage flipped the case of a letter.
        assert not any(f"{tag}|{what}".encode() in (v or b"").lower() for v in values), (
            f"{tag}|{what} reached the broker: {stored}")
    assert (f"{tag}|clean|1".encode(), True) in stored[1], stored[1]
    assert (f"{tag}|clean|9".encode(), True) in stored[1], stored[1]

    # Counted once per batch, logged once per partition.
    after = proxy.metrics()["kafka_proxy_corrupt_batches_total"]
    assert after - before == 3, f"kafka_proxy_corrupt_batches_total went from {before} to {after}"
    for vp in (5, 6, 3):
        line = proxy.wait_for_log(rf"Produce.*virtual partition {vp} is corrupt.*CRC-32C", since=mark)
        print(f"proxy: {line}")
    log = proxy.log_since(mark)
    assert len([l for l in log.splitlines() if "virtual partition 5 is corrupt" in l]) == 1, log


def test_untagged_k0_damage_goes_to_the_broker_as_it_came(broker, corrupt_topic):
    """A k = 0 batch without a sibling's tag is not rewritten: its bytes go
    upstream as they came, the broker checks them. Apache Kafka answers
    CORRUPT_MESSAGE itself (LogValidator); Tansu 0.6 stores it. Either way
    the stored batch, if any, still carries the wrong CRC: not re-sealed."""
    proxy, name = corrupt_topic
    before = proxy.metrics().get("kafka_proxy_corrupt_batches_total", 0)
    value = b"untagged|k0|2"
    bad = flip_value(kafkawire.record_batch([(None, value, [])]), value)
    with kafkawire.connect(proxy.address) as s:
        _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
            s, kafkawire.produce_request(50, {name: {2: bad}}, version=8)))
    r = res[(name, 2)]
    print(f"the broker's answer to an untagged damaged k = 0 batch: {r}")
    assert r["error"] in (0, CORRUPT_MESSAGE), r
    stored = stored_values(broker, name, 2)
    if r["error"] == 0:  # Tansu 0.6
        damaged = bytes([value[0] ^ 0x20]) + value[1:]
        assert stored == [(damaged, False)], f"stored as it came, CRC still wrong: {stored}"
    else:  # a broker that checks, as Kafka does
        assert stored == [], stored
    assert proxy.metrics()["kafka_proxy_corrupt_batches_total"] == before, "not the proxy's refusal"


def test_a_damaged_mixed_batch_is_not_split_on_fetch(broker, corrupt_topic):
    """A batch holding records of VP 0 and VP 4 (physical 0) whose CRC is
    wrong, written to the broker directly (Tansu stores it): fetched through
    the proxy, VP 0 and VP 4 get CORRUPT_MESSAGE at its offset rather than a
    re-sealed subset, VP 8 moves past it."""
    proxy, name = corrupt_topic
    before = proxy.metrics().get("kafka_proxy_corrupt_batches_total", 0)
    mark = proxy.log_mark()
    mixed = kafkawire.record_batch([(None, b"mixed|0", []), (None, b"mixed|4", [("kpr.vp", b"4")])])
    with kafkawire.connect(broker.address) as s:
        _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
            s, kafkawire.produce_request(60, {name: {0: flip_crc(mixed)}}, version=8)))
    assert res[(name, 0)]["error"] == 0, f"Tansu 0.6 stores a batch whose CRC is wrong: {res}"
    direct = virtual.raw_batches(broker.address, name, 0)
    assert [b["crc_ok"] for b in direct] == [False], "the broker hands the damaged batch back as stored"

    with kafkawire.connect(proxy.address) as s:
        _, got = kafkawire.parse_fetch_v4_response(kafkawire.round_trip(
            s, kafkawire.fetch_v4_request(61, {name: {0: 0, 4: 0, 8: 0}})))
    for vp in (0, 4):
        part = got[(name, vp)]
        assert part["error"] == CORRUPT_MESSAGE, f"VP {vp}: {part}"
        assert not kafkawire.parse_batches(part["records"]), f"VP {vp}: records with the error: {part}"
    sibling = got[(name, 8)]
    assert sibling["error"] == 0, sibling
    passed = kafkawire.parse_batches(sibling["records"])
    assert [(b["base_offset"], b["count"], b["crc_ok"]) for b in passed] == [(0, 0, True)], (
        f"VP 8 moves past the batch (an empty batch over it): {passed}")

    # librdkafka reports it to the application.
    consumer = Consumer(clients.confluent_conf(proxy.address, **{
        "group.id": f"corrupt-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(name, 4, 0)])
        seen = None
        for _ in range(50):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is not None, f"a record of the damaged batch was delivered: {msg.value()}"
            seen = msg.error()
            if seen.code() == CORRUPT_MESSAGE:  # librdkafka: INVALID_MSG
                break
        assert seen is not None and seen.code() == CORRUPT_MESSAGE, f"confluent-kafka on VP 4: {seen}"
        print(f"confluent-kafka on VP 4: {seen}")
    finally:
        consumer.close()

    # Counted and logged once, however often it is fetched.
    after = proxy.metrics()["kafka_proxy_corrupt_batches_total"]
    assert after - before == 1, f"kafka_proxy_corrupt_batches_total went from {before} to {after}"
    line = proxy.wait_for_log(rf"Fetch of {name} partition 0.*fails its CRC-32C check", since=mark)
    print(f"proxy: {line}")
    assert len([l for l in proxy.log_since(mark).splitlines() if "fails its CRC-32C" in l]) == 1
