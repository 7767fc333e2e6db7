"""Fetch v13+ names topics by id. A client can hold an id the proxy has not
seen: learnt through another proxy instance behind the same address, or
before this one started. The proxy must look the id up rather than pass the
fetch through with virtual partition numbers (the broker would answer
physical partition 1 with all its records, siblings' included, and
partition 5 of a 4-partition topic with an error).

Topic `byid-<id>`, created on the broker after the proxy started (20 over 4,
the default rule; the proxy refreshes its metadata every 30 s, so it does
not know the topic). Records written directly to physical partition 1:
untagged ones (virtual 1), ones tagged kpr.vp=5 and kpr.vp=9, and one
tagged kpr.vp=6 (a virtual partition of physical 2: counts as untagged
here). A raw Fetch by topic id, straight to the proxy, of virtual 1, 5 and
9 must give each exactly its records at their physical offsets. An id no
topic has is passed on after the look-up finds nothing, and gets the
broker's answer: UNKNOWN_TOPIC_ID from Kafka, UNKNOWN_TOPIC_OR_PARTITION
from Tansu 0.6.
"""

import struct
import uuid

from confluent_kafka import TopicCollection

import clients
import kafkawire
import virtual

V, P = 20, 4
UNKNOWN_TOPIC_ID = 100
UNKNOWN_TOPIC_OR_PARTITION = 3


def topic_id_on_broker(broker_address, name):
    admin = clients.admin(broker_address)  # kept alive until the answer is in
    tid = admin.describe_topics(TopicCollection([name]))[name].result(30).topic_id
    return struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())


def fetch_version(sock):
    payload = kafkawire.round_trip(sock, kafkawire.api_versions_request(0, 1))
    _, error, keys = kafkawire.parse_api_versions_response(0, payload)
    assert error == 0
    lo, hi = keys[kafkawire.API_FETCH]
    version = min(hi, 15)
    assert version >= 13, f"Fetch by topic id needs v13+; the proxy offers v{lo}-v{hi}"
    return version


def test_fetch_by_an_id_the_proxy_has_not_seen(broker, start_proxy):
    proxy = start_proxy(mapping=virtual.mapping(V, P), log_level="debug")
    name = f"byid-{uuid.uuid4().hex[:8]}"
    clients.create_topic(broker.address, name, P)
    written = [
        (1, None, b"vp1-a", []),
        (1, None, b"vp5-a", [("kpr.vp", b"5")]),
        (1, None, b"vp9-a", [("kpr.vp", b"9")]),
        (1, None, b"vp1-b", []),
        (1, None, b"vp5-b", [("kpr.vp", b"5")]),
        (1, None, b"vp1-stray", [("kpr.vp", b"6")]),
    ]
    reports = virtual.produce_confluent_full(broker.address, name, written)
    offsets = {rec[2]: off for rec, (_, off) in zip(written, reports)}
    expected = {
        1: [b"vp1-a", b"vp1-b", b"vp1-stray"],
        5: [b"vp5-a", b"vp5-b"],
        9: [b"vp9-a"],
    }
    topic_id = topic_id_on_broker(broker.address, name)

    with kafkawire.connect(proxy.address, timeout=15) as sock:
        version = fetch_version(sock)
        payload = kafkawire.round_trip(sock, kafkawire.fetch_by_id_request(
            2, version, {topic_id: {vp: 0 for vp in expected}}))
        _, error, result = kafkawire.parse_fetch_by_id_response(payload)
        assert error == 0
        for vp, values in expected.items():
            part = result[(topic_id, vp)]
            assert part["error"] == 0, f"virtual partition {vp}: error {part['error']}"
            got = [(off, value) for b in kafkawire.parse_batches(part["records"])
                   for off, _, value, _ in virtual.batch_records(b)]
            assert got == [(offsets[v], v) for v in values], f"virtual partition {vp}"

        stranger = uuid.uuid4().bytes
        payload = kafkawire.round_trip(sock, kafkawire.fetch_by_id_request(
            3, version, {stranger: {0: 0}}))
        _, error, result = kafkawire.parse_fetch_by_id_response(payload)
        codes = {error} | {p["error"] for p in result.values()}
        assert codes & {UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION}, \
            f"unknown topic id: got error codes {codes}"
