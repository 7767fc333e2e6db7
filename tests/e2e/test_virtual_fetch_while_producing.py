"""A librdkafka consumer of a remapped topic while a producer writes to it
(found by scripts/soak: ~487,000 MSG_SIZE_TOO_LARGE errors in 30 minutes).

A virtual partition whose fetch finds only siblings' new data was answered
with nothing but an empty data batch standing in for them. librdkafka
(rdkafka_msgset_reader.c, rd_kafka_msgset_reader_run) reads a record set
that yields no message, no error and no control batch as "the next message
did not fit": it doubles the partition's fetch size (up to 1 GiB) and then
reports MSG_SIZE_TOO_LARGE ("Message at offset N might be too large to
fetch, try increasing receive.message.max.bytes") at every such answer.
Read from Kafka directly, a partition with no new data of its own answers
an empty record set, so the consumer sees no error. Through the proxy it
must see none either, and still get every record.
"""

import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer

import clients
import virtual

V, P = 40, 4
PRODUCE_SECONDS = 12


def test_librdkafka_consumer_while_producing_sees_no_size_errors(broker, start_proxy, topic):
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P)
    delivered = set()
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            delivered.add((msg.partition(), msg.value()))

    producer = Producer(clients.confluent_conf(proxy.address, **{"enable.idempotence": True, "linger.ms": 5}))
    # A backlog first, so the consumer starts behind and catches up while
    # the producer is still writing.
    for i in range(2000):
        producer.produce(name, value=f"pre-{i}".encode(), partition=i % V, on_delivery=on_delivery)
        if i % 100 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    stop = threading.Event()

    def produce_live():
        i = 0
        while not stop.is_set():
            producer.produce(name, value=f"live-{i}".encode(), partition=i % V, on_delivery=on_delivery)
            i += 1
            producer.poll(0.005)

    consumer = Consumer(clients.confluent_conf(proxy.address, **{
        "group.id": f"kpr-e2e-{name}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.wait.max.ms": 100}))
    consumer.subscribe([name])
    received = set()
    errors = {}

    def consume(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                err = msg.error()
                if err is None:
                    received.add((msg.partition(), msg.value()))
                elif err.code() != KafkaError._PARTITION_EOF:
                    first = errors.setdefault(err.name(), (0, f"VP {msg.partition()} offset {msg.offset()}: {err.str()}"))
                    errors[err.name()] = (first[0] + 1, first[1])
            if stop.is_set() and delivered <= received:
                return

    producer_thread = threading.Thread(target=produce_live)
    producer_thread.start()
    try:
        consume(PRODUCE_SECONDS)
    finally:
        stop.set()
        producer_thread.join()
    assert producer.flush(30) == 0 and not failed, failed[:3]
    try:
        consume(60)
    finally:
        consumer.close()

    assert len(delivered) > 2000
    assert "MSG_SIZE_TOO_LARGE" not in errors, f"consumer errors (count, first): {errors}"
    assert not errors, f"consumer errors (count, first): {errors}"
    missing = delivered - received
    assert not missing, f"{len(missing)} of {len(delivered)} records not received, e.g. {sorted(missing)[:5]}"
    assert received <= delivered
