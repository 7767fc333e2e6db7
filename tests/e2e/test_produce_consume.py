"""Produce and consume through the proxy with real clients; every record is
checked: nothing lost, nothing duplicated, order kept per partition. The
broker's own high watermarks confirm nothing was written twice."""

import clients

PARTITIONS = 6
COUNT = 10_000


def assert_on_broker(broker, name, records):
    """Each partition on the broker holds exactly the records produced."""
    want = clients.per_partition_counts(records)
    high = clients.high_watermarks(broker.address, name, range(PARTITIONS))
    assert high == {p: want.get(p, 0) for p in range(PARTITIONS)}


def test_confluent_kafka_10k(broker, proxy, topic):
    name = topic(PARTITIONS)
    records = clients.make_records(range(PARTITIONS), COUNT, tag="ck")
    delivered = clients.produce_confluent(proxy.address, name, records)
    assert [p for p, _ in delivered] == [p for p, _, _ in records]
    consumed = clients.consume_confluent(proxy.address, name, range(PARTITIONS), COUNT)
    clients.check_records(records, consumed)
    # Offsets the producer was told are the offsets the consumer sees.
    assert sorted(delivered) == sorted((p, o) for p, o, _, _ in consumed)
    assert_on_broker(broker, name, records)


def test_kafka_python_10k(broker, proxy, topic):
    name = topic(PARTITIONS)
    records = clients.make_records(range(PARTITIONS), COUNT, tag="kp")
    delivered = clients.produce_kafka_python(proxy.address, name, records)
    consumed = clients.consume_kafka_python(proxy.address, name, range(PARTITIONS), COUNT)
    clients.check_records(records, consumed)
    assert sorted(delivered) == sorted((p, o) for p, o, _, _ in consumed)
    assert_on_broker(broker, name, records)


def test_kcat_produce_consume(broker, proxy, topic):
    """kcat -P / -C per partition, explicit partition, from the beginning."""
    partitions, per_partition = 3, 200
    name = topic(partitions)
    records = []
    for p in range(partitions):
        lines = [f"{p}:{i}:kcat" for i in range(per_partition)]
        clients.kcat(proxy.address, "-P", "-t", name, "-p", p,
                     input=("\n".join(lines) + "\n").encode())
        records += [(p, None, line.encode()) for line in lines]
    consumed = []
    for p in range(partitions):
        out = clients.kcat(proxy.address, "-C", "-t", name, "-p", p, "-o", "beginning", "-e",
                           "-q", "-f", "%p %o %s\n")
        for line in out.decode().splitlines():
            part, off, value = line.split(" ", 2)
            consumed.append((int(part), int(off), None, value.encode()))
    clients.check_records(records, consumed)
    high = clients.high_watermarks(broker.address, name, range(partitions))
    assert high == {p: per_partition for p in range(partitions)}
