"""A produce with acks=0 and what follows it on the same connection.

Kafka never answers a produce with acks=0 (KafkaApis.handleProduceRequest
sends no response when acks == 0; the client does not wait for one). Some
Kafka-compatible brokers, Tansu among them, answer anyway. Such a stray
answer once reached the proxy's matching of answers to requests as the
answer to the client's next request ("answered Metadata with correlation id
2, expected 3") and closed the client's connection. The proxy must drop an
answer to a request that expects none, and keep the connection: the next
request on it gets its own answer, and the record is written.
"""

import pytest

import kafkawire
import virtual

V, P = 20, 4


def produce_acks0_then_metadata(address, name, partition, value):
    with kafkawire.connect(address, timeout=10.0) as s:
        error, _ = kafkawire.api_versions(s, 0, 1)
        assert error == 0
        batch = kafkawire.record_batch([(None, value.encode(), [])])
        s.sendall(kafkawire.produce_request(2, {name: {partition: batch}}, version=3, acks=0))
        # Metadata on the same connection: its answer, with its own
        # correlation id, must come, not a closed connection.
        try:
            _, _, topics = kafkawire.metadata_v1(s, [name], 3)
        except kafkawire.WireError as e:
            pytest.fail(f"the request after an acks=0 produce got no answer: {e}")
        assert name in topics
        # And the connection still serves the request after that.
        _, _, topics = kafkawire.metadata_v1(s, [name], 4)
        assert name in topics


@pytest.mark.parametrize("remapped", [False, True], ids=["pass-through", "virtual-k1"])
def test_the_answer_a_broker_sends_to_acks0_does_not_close_the_connection(start_proxy, topic, remapped):
    name = topic(P, prefix="acks0")
    proxy = start_proxy(mapping=virtual.mapping(V, P) if remapped else None)
    # k >= 1 (VP 6 lives on physical 2) when remapped.
    partition = 6 if remapped else 2
    mark = proxy.log_mark()
    produce_acks0_then_metadata(proxy.address, name, partition, "zero-acks")
    assert "correlation id" not in proxy.log_since(mark)
    # The record was written where it belongs.
    got = virtual.read_vp_confluent(proxy.address, name, partition, timeout=30.0)
    assert [m.value for m in got] == [b"zero-acks"]
