"""The broker stops under a running proxy: clients get errors, not hangs; the
proxy stays up, logs a warning naming the broker, and serves again once the
broker is back on the same address (sqlite storage keeps the data)."""

import re
import time

from confluent_kafka import KafkaException, Producer

import clients

PARTITIONS = 3


def wait_metadata(bootstrap, name, timeout=60.0):
    """Until metadata through bootstrap shows the topic with all partitions led."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            t = clients.list_topics(bootstrap, timeout=5).topics.get(name)
            if t and t.error is None and len(t.partitions) == PARTITIONS and all(
                    p.leader >= 0 and p.error is None for p in t.partitions.values()):
                return
        except KafkaException:
            pass
        assert time.monotonic() < deadline, f"no metadata for {name} within {timeout}s"
        time.sleep(1)


def test_broker_stopped_mid_run(broker_factory, start_proxy):
    upstream = broker_factory("sqlite")
    proxy = start_proxy(upstream=upstream)
    name = f"restart-{upstream.port}"
    clients.create_topic(upstream.address, name, PARTITIONS)

    first = clients.make_records(range(PARTITIONS), 300, tag="before")
    clients.produce_confluent(proxy.address, name, first)
    clients.check_records(first, clients.consume_confluent(
        proxy.address, name, range(PARTITIONS), len(first)))

    # A producer that lives across the outage.
    errors, delivered = [], []
    producer = Producer(clients.confluent_conf(proxy.address, **{
        "message.timeout.ms": 8000, "linger.ms": 5}))

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg.offset())

    producer.produce(name, value=b"warm-up", partition=1, on_delivery=report)
    assert producer.flush(30) == 0 and delivered and not errors, errors
    delivered.clear()

    mark = proxy.log_mark()
    upstream.stop()
    assert not upstream.alive()

    # The client gets an error within its own timeout, not a hang.
    started = time.monotonic()
    producer.produce(name, value=b"during-outage", partition=0, on_delivery=report)
    left = producer.flush(30)
    elapsed = time.monotonic() - started
    assert left == 0 and errors and not delivered, (
        f"produce while the broker is down: errors={errors} delivered={delivered} "
        f"left={left} after {elapsed:.1f}s")
    print(f"produce during the outage failed after {elapsed:.1f}s: {errors[0]}")

    addr = re.escape(upstream.address)
    line = proxy.wait_for_log(rf"warn.*{addr}|{addr}.*warn", since=mark, timeout=15)
    print(f"proxy warning: {line}")
    assert proxy.alive(), "the proxy exited when the broker stopped\n" + proxy.describe()

    upstream.start()
    wait_metadata(proxy.address, name)

    # The producer from before the outage recovers through the same proxy...
    errors.clear()
    producer.produce(name, value=b"same-producer", partition=0, on_delivery=report)
    assert producer.flush(30) == 0 and delivered and not errors, (
        f"the producer from before the outage did not recover: {errors}")
    # ...and new clients produce and consume everything, old data included.
    second = clients.make_records(range(PARTITIONS), 300, tag="after")
    clients.produce_confluent(proxy.address, name, second)
    consumed = clients.consume_confluent(proxy.address, name, range(PARTITIONS),
                                         len(first) + len(second) + 2)
    extra = [r[3] for r in consumed if r[3] in (b"warm-up", b"same-producer")]
    assert sorted(extra) == [b"same-producer", b"warm-up"], extra
    assert b"during-outage" not in {r[3] for r in consumed}
    clients.check_records(first + second, [r for r in consumed if r[3] not in extra])
    assert proxy.alive(), "the proxy exited\n" + proxy.describe()
