"""Metadata through the proxy: every broker endpoint is the proxy's advertised
address (so clients never go around the proxy), partition counts are right."""

import clients


def test_metadata_kcat(proxy, topic):
    t6, t3 = topic(6), topic(3)
    md = clients.kcat_metadata(proxy.address)
    names = {b["name"] for b in md["brokers"]}
    assert names == {proxy.advertised}, f"brokers in metadata: {md['brokers']}"
    counts = {t["topic"]: len(t["partitions"]) for t in md["topics"]}
    assert counts.get(t6) == 6 and counts.get(t3) == 3, counts
    for t in md["topics"]:
        if t["topic"] in (t6, t3):
            assert sorted(p["partition"] for p in t["partitions"]) == list(range(counts[t["topic"]]))
            broker_ids = {b["id"] for b in md["brokers"]}
            assert all(p["leader"] in broker_ids for p in t["partitions"])


def test_metadata_confluent_kafka(proxy, topic):
    t6, t3 = topic(6), topic(3)
    md = clients.list_topics(proxy.address)
    endpoints = {f"{b.host}:{b.port}" for b in md.brokers.values()}
    assert endpoints == {proxy.advertised}, f"brokers in metadata: {md.brokers}"
    assert len(md.topics[t6].partitions) == 6
    assert len(md.topics[t3].partitions) == 3
    for t in (t6, t3):
        for p in md.topics[t].partitions.values():
            assert p.error is None and p.leader in md.brokers


def test_metadata_kafka_python(proxy, topic):
    t6, t3 = topic(6), topic(3)
    admin = clients.kafka_python_admin(proxy.address)
    try:
        cluster = admin.describe_cluster()
        endpoints = {f"{b['host']}:{b['port']}" for b in cluster["brokers"]}
        assert endpoints == {proxy.advertised}, f"brokers in metadata: {cluster['brokers']}"
        described = {t["name"]: t for t in admin.describe_topics([t6, t3])}
    finally:
        admin.close()
    assert sorted(p["partition_index"] for p in described[t6]["partitions"]) == list(range(6))
    assert sorted(p["partition_index"] for p in described[t3]["partitions"]) == list(range(3))
    # The consumer's own metadata path (kafka-python's cluster view).
    consumer = clients.kafka.KafkaConsumer(bootstrap_servers=[proxy.address])
    try:
        assert consumer.partitions_for_topic(t6) == set(range(6))
        assert consumer.partitions_for_topic(t3) == set(range(3))
    finally:
        consumer.close()
