"""A record that fits the topic's max.message.bytes may not fit once tagged.

The proxy adds the `kpr.vp` header to every record of a k >= 1 virtual
partition: key "kpr.vp" (6 bytes) and the VP number in ASCII, each after a
one-byte length varint, so 8 + digits bytes per record (10 for VP 31). A
record near the topic's `max.message.bytes` is then refused by the broker
with MESSAGE_TOO_LARGE (Kafka: `LogValidator` / `Log.append`,
RecordTooLargeException) or RECORD_LIST_TOO_LARGE on k >= 1 only, while the
same record is stored on k = 0. The client's answer (Produce v8+
error_message) must say why, and the proxy logs it once per topic.

Tansu 0.6 does not enforce max.message.bytes (a 1000-byte record is stored
in a topic created with max.message.bytes=200), so the relay between proxy
and broker sets the broker's answer to MESSAGE_TOO_LARGE, as Kafka would
answer; the broker has stored the records, which this test does not read.
"""

import pytest

import clients
import kafkawire
import virtual

V, P = 40, 2
MESSAGE_TOO_LARGE = 10


@pytest.fixture
def relayed(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    name = f"big-records-{relay.port}"
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(100, 10, {name: (V, P)}))
    clients.create_topic(upstream.address, name, P)
    yield proxy, relay, name


def test_too_large_on_a_tagged_partition_says_the_tag_is_why(relayed):
    proxy, relay, name = relayed
    batch = kafkawire.record_batch([(None, b"x" * 900, [])])
    for attempt in range(2):
        relay.answer_produce_error(MESSAGE_TOO_LARGE, name.encode(), count=2)
        with kafkawire.connect(proxy.address) as s:
            # VP 0 (k = 0, untagged) and VP 31 (k = 15, tagged): two rounds.
            _, res = kafkawire.parse_produce_response(8, kafkawire.round_trip(
                s, kafkawire.produce_request(20 + attempt, {name: {0: batch, 31: batch}}, version=8)))
        tagged, untagged = res[(name, 31)], res[(name, 0)]
        assert tagged["error"] == MESSAGE_TOO_LARGE and untagged["error"] == MESSAGE_TOO_LARGE, res
        message = tagged["error_message"] or ""
        assert "kpr.vp" in message and "10 bytes" in message and "max.message.bytes" in message, (
            f"VP 31 refused as too large without saying the kpr.vp tag adds 10 bytes per record: {tagged}")
        assert "kpr.vp" not in (untagged["error_message"] or ""), (
            f"VP 0 was not tagged, yet its answer blames the tag: {untagged}")
        print(f"VP 31: {message}")
    lines = virtual.log_lines(proxy, rf"{name}.*kpr\.vp")
    assert len(lines) == 1, f"logged once per topic, not {len(lines)} times: {lines}"
