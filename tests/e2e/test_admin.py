"""Create and delete topics through the proxy, checked on the broker."""

import time
import uuid

import clients


def wait_gone(bootstrap, name, timeout=30.0):
    deadline = time.monotonic() + timeout
    while name in clients.topic_names(bootstrap):
        assert time.monotonic() < deadline, f"topic {name} still listed after {timeout}s"
        time.sleep(0.3)


def test_create_delete_topic_confluent_kafka(broker, proxy):
    name = f"adm-ck-{uuid.uuid4().hex[:8]}"
    clients.create_topic(proxy.address, name, 4)
    assert clients.wait_partition_count(broker.address, name, 4) == 4, "not created on the broker"
    clients.delete_topic(proxy.address, name)
    wait_gone(broker.address, name)
    wait_gone(proxy.address, name)


def test_create_delete_topic_kafka_python(broker, proxy):
    name = f"adm-kp-{uuid.uuid4().hex[:8]}"
    admin = clients.kafka_python_admin(proxy.address)
    try:
        result = admin.create_topics({name: {"num_partitions": 5, "replication_factor": 1}},
                                     timeout_ms=30000)
        errors = [t for t in result["topics"] if t["error_code"] != 0]
        assert not errors, result
        assert clients.wait_partition_count(broker.address, name, 5) == 5, "not created on the broker"
        assert name in admin.list_topics()
        result = admin.delete_topics([name], timeout_ms=30000)
        errors = [t for t in result["topics"] if t["error_code"] != 0]
        assert not errors, result
    finally:
        admin.close()
    wait_gone(broker.address, name)
