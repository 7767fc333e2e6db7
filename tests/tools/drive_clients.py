#!/usr/bin/env python3
"""Drive real Kafka clients through record_relay.py to capture golden frames
(a dev tool; see tests/golden/README.md for the whole procedure).

    drive_clients.py kafka-python    BOOTSTRAP TOPIC [API_VERSION]   e.g. 2.1
    drive_clients.py confluent-kafka BOOTSTRAP TOPIC [librdkafka.key=value ...]
    drive_clients.py kcat            BOOTSTRAP TOPIC

Each run creates TOPIC (several partitions) and TOPIC-temp, lists and
describes topics, configs and the cluster, produces a few small non-ASCII
records, consumes them in group TOPIC-group, commits, reads the committed
offsets back, lists and describes groups, and deletes TOPIC-temp. Steps the
broker does not support are reported and skipped. Use a fresh TOPIC for each
run against the same broker.
"""

import subprocess
import sys
import time


def tryit(name, f):
    try:
        print(name, f())
    except Exception as e:  # report and go on: capture what the broker allows
        print(name, "ERR", repr(e))


def kafka_python(bootstrap, topic, api_version=None):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

    group = topic + "-group"
    kw = {"api_version": tuple(int(x) for x in api_version.split("."))} if api_version else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="golden-kp", request_timeout_ms=10000, **kw)
    tryit("create", lambda: admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]))
    tryit("create temp", lambda: admin.create_topics([NewTopic(topic + "-temp", num_partitions=1, replication_factor=1)]))
    tryit("topics", admin.list_topics)
    tryit("describe_topics", lambda: admin.describe_topics([topic]))
    tryit("describe_configs", lambda: admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]))
    tryit("describe_cluster", admin.describe_cluster)
    p = KafkaProducer(bootstrap_servers=bootstrap, client_id="golden-kp-producer", acks=1, linger_ms=5, **kw)
    for i in range(6):
        p.send(topic, key=b"k%d" % i, value=("v%d-\u00e9" % i).encode(), partition=i % 3)
    p.flush()
    p.close()
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="golden-kp-consumer",
                      auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=8000,
                      fetch_max_wait_ms=200, heartbeat_interval_ms=300, **kw)
    n = 0
    for _ in c:
        n += 1
        if n >= 6:
            break
    print("consumed", n)
    c.commit()
    tryit("committed", lambda: c.committed(TopicPartition(topic, 0)))
    time.sleep(1.5)  # a few heartbeats
    c.poll(timeout_ms=500)
    c.close()
    tryit("list_groups", admin.list_groups)
    tryit("describe_groups", lambda: admin.describe_groups([group]))
    tryit("list_group_offsets", lambda: admin.list_group_offsets(group))
    tryit("list_partition_offsets", lambda: admin.list_partition_offsets({TopicPartition(topic, 0): -1}))
    tryit("create_partitions", lambda: admin.create_partitions({topic + "-temp": NewPartitions(2)}))
    tryit("describe_producers", lambda: admin.describe_producers([TopicPartition(topic, 0)]))
    tryit("describe_topic_partitions", lambda: admin.describe_topic_partitions([topic]))
    tryit("delete_records", lambda: admin.delete_records({TopicPartition(topic, 1): 1}))
    tryit("delete_groups", lambda: admin.delete_groups([group]))
    tryit("delete", lambda: admin.delete_topics([topic + "-temp"]))
    admin.close()


def confluent_kafka(bootstrap, topic, *settings):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    group = topic + "-group"
    extra = dict(s.split("=", 1) for s in settings)

    def wait(futures):
        return {k: f.result(timeout=15) for k, f in futures.items()}

    a = AdminClient({**extra, "bootstrap.servers": bootstrap, "client.id": "golden-ck-admin"})
    tryit("create", lambda: wait(a.create_topics([NewTopic(topic, 4, 1), NewTopic(topic + "-temp", 1, 1)])))
    tryit("list", lambda: sorted(a.list_topics(timeout=10).topics))
    tryit("describe_configs", lambda: wait(a.describe_configs([ConfigResource("topic", topic)])))
    tryit("create_partitions", lambda: wait(a.create_partitions([NewPartitions(topic + "-temp", 2)])))
    p = Producer({**extra, "bootstrap.servers": bootstrap, "client.id": "golden-ck-producer", "linger.ms": 5,
                  "acks": "all", "enable.idempotence": False})
    for i in range(8):
        p.produce(topic, key=b"k%d" % i, value=("v%d-\u00fc" % i).encode(), partition=i % 4)
    p.flush(15)
    c = Consumer({**extra, "bootstrap.servers": bootstrap, "client.id": "golden-ck-consumer", "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "heartbeat.interval.ms": 300, "session.timeout.ms": 6000, "fetch.wait.max.ms": 200})
    c.subscribe([topic])
    n, deadline = 0, time.time() + 20
    while n < 8 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            n += 1
    print("consumed", n)
    tryit("commit", lambda: c.commit(asynchronous=False))
    tryit("committed", lambda: c.committed([TopicPartition(topic, 0)], timeout=10))
    time.sleep(1)
    c.close()
    tryit("list_groups", lambda: a.list_consumer_groups().result(timeout=10))
    tryit("describe_groups", lambda: wait(a.describe_consumer_groups([group])))
    tryit("delete_topic", lambda: wait(a.delete_topics([topic + "-temp"])))
    tryit("describe_cluster", lambda: a.describe_cluster().result(timeout=10))


def kcat(bootstrap, topic):
    # Debian's kcat (older librdkafka) gives up on Tansu's ApiVersions reply
    # ("Read underflow"); its ApiVersions request and the reply still get
    # recorded.
    def run(args, stdin=None):
        r = subprocess.run(["kcat", "-b", bootstrap] + args, input=stdin, capture_output=True, timeout=30)
        print(" ".join(args), "->", r.returncode, r.stderr.decode(errors="replace")[-200:])

    run(["-L"])
    run(["-P", "-t", topic, "-K:"], b"a:1\nbb:2\n")
    run(["-C", "-t", topic, "-o", "beginning", "-e", "-c", "2"])


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    client, args = sys.argv[1], sys.argv[2:]
    {"kafka-python": kafka_python, "confluent-kafka": confluent_kafka, "kcat": kcat}[client](*args)
