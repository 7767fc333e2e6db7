"""Real Kafka clients driven by the end-to-end tests, every call bounded.

Records are (partition, key, value) with value b"<partition>:<seq>:<pad>",
seq counting per partition from 0 in production order, so a consumer's
output can be checked record by record: check_records() asserts nothing
lost, nothing duplicated, nothing foreign, and order kept per partition.
"""

import json
import subprocess
import time
from collections import defaultdict

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
import kafka
import kafka.admin
import kafka.errors
import kafka.structs

CLIENT_TIMEOUT = 30.0


# ------------------------------------------------------------ records

def make_records(partitions, count, pad=32, tag=""):
    """count records spread round-robin over the given partition numbers."""
    partitions = list(partitions)
    seq = defaultdict(int)
    records = []
    for i in range(count):
        p = partitions[i % len(partitions)]
        value = f"{p}:{seq[p]}:{tag}".ljust(pad, "x").encode()
        records.append((p, f"k{i}".encode(), value))
        seq[p] += 1
    return records


def check_records(expected, consumed):
    """expected: [(partition, key, value)] in production order.
    consumed: [(partition, offset, key, value)] in consumption order.

    Per partition, the consumed values must equal the produced ones, same
    order, and offsets must increase strictly.
    """
    want = defaultdict(list)
    for p, k, v in expected:
        want[p].append((k, v))
    got = defaultdict(list)
    last_offset = {}
    for p, off, k, v in consumed:
        assert off > last_offset.get(p, -1), (
            f"partition {p}: offset {off} after {last_offset.get(p)}")
        last_offset[p] = off
        got[p].append((k, v))
    assert set(got) <= set(want), f"records from unexpected partitions {set(got) - set(want)}"
    for p in sorted(want):
        w, g = want[p], got.get(p, [])
        if w == g:
            continue
        missing = len(set(w) - set(g))
        dupes = len(g) - len(set(g))
        first_diff = next((i for i, (a, b) in enumerate(zip(w, g)) if a != b), min(len(w), len(g)))
        raise AssertionError(
            f"partition {p}: produced {len(w)}, consumed {len(g)}, missing {missing}, "
            f"duplicates {dupes}, first difference at index {first_diff}: "
            f"expected {w[first_diff] if first_diff < len(w) else None}, "
            f"got {g[first_diff] if first_diff < len(g) else None}")


def per_partition_counts(records):
    counts = defaultdict(int)
    for r in records:
        counts[r[0]] += 1
    return dict(counts)


# ------------------------------------------------------------ confluent-kafka

def confluent_conf(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000,
            "client.id": "kpr-e2e"}
    conf.update(extra)
    return conf


def admin(bootstrap):
    return AdminClient(confluent_conf(bootstrap))


def list_topics(bootstrap, timeout=CLIENT_TIMEOUT):
    """ClusterMetadata from confluent-kafka."""
    return admin(bootstrap).list_topics(timeout=timeout)


def partition_count(bootstrap, topic, timeout=CLIENT_TIMEOUT):
    """Partition count of topic, or None when the topic does not exist."""
    md = admin(bootstrap).list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_partition_count(bootstrap, topic, want, timeout=CLIENT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        got = partition_count(bootstrap, topic, timeout=10)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def topic_names(bootstrap, timeout=CLIENT_TIMEOUT):
    return set(list_topics(bootstrap, timeout).topics)


def create_topic(bootstrap, name, partitions, timeout=CLIENT_TIMEOUT):
    client = admin(bootstrap)  # must outlive the future
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    got = wait_partition_count(bootstrap, name, partitions, timeout)
    assert got == partitions, f"topic {name}: {got} partitions after create, wanted {partitions}"


def delete_topic(bootstrap, name, timeout=CLIENT_TIMEOUT):
    client = admin(bootstrap)  # must outlive the future
    futures = client.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)


def produce_confluent(bootstrap, topic, records, timeout=60.0, **conf):
    """Produce all records [(partition, key, value)]; returns [(partition,
    offset)] in records order.

    Fails on any delivery error or when not everything is delivered in time.
    """
    return produce_confluent_headers(bootstrap, topic, [(p, k, v, None) for p, k, v in records],
                                     timeout=timeout, **conf)


def produce_confluent_headers(bootstrap, topic, records, timeout=60.0, **conf):
    """Like produce_confluent, with records [(partition or None, key, value,
    headers)]: partition None lets the client's partitioner pick."""
    reports = [None] * len(records)
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())
        return cb

    producer = Producer(confluent_conf(bootstrap, **{
        "linger.ms": 5, "message.timeout.ms": int(timeout * 1000), **conf}))
    deadline = time.monotonic() + timeout
    for i, (p, k, v, h) in enumerate(records):
        kwargs = {"value": v, "key": k, "on_delivery": on_delivery(i)}
        if p is not None:
            kwargs["partition"] = p
        if h:
            kwargs["headers"] = h
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
                assert time.monotonic() < deadline, "producer queue stayed full"
        producer.poll(0)
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert left == 0, f"{left} records not delivered within {timeout}s"
    assert all(r is not None for r in reports)
    return reports


def _read_expected(poll, expected, timeout):
    """Call poll() (which returns a list of records) until `expected`
    records arrived, then one second more to catch extras; bounded by
    `timeout`."""
    out = []
    deadline = time.monotonic() + timeout
    extra_until = None
    while True:
        now = time.monotonic()
        if len(out) >= expected and extra_until is None:
            extra_until = now + 1.0
        if (extra_until is not None and now > extra_until) or now > deadline:
            return out
        out.extend(poll())


def consume_confluent(bootstrap, topic, partitions, expected, timeout=60.0, **conf):
    """Read `expected` records from the beginning of the given partitions
    (assigned, no group); then keep polling 1 s for anything extra.

    Returns [(partition, offset, key, value)].
    """
    consumer = Consumer(confluent_conf(bootstrap, **{
        "group.id": "kpr-e2e-unused", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", **conf}))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        def poll():
            out = []
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
            return out
        return _read_expected(poll, expected, timeout)
    finally:
        consumer.close()


def high_watermarks(bootstrap, topic, partitions, timeout=60.0):
    """{partition: high watermark} as Fetch responses from bootstrap report it.

    Reads every partition to its end. Not ListOffsets: with memory storage
    Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset
    plus one (seen: 1, 106 for partitions holding 5, 1105 records; sqlite
    storage answers right), where Kafka answers the high watermark.
    """
    partitions = list(partitions)
    consumer = Consumer(confluent_conf(bootstrap, **{
        "group.id": "kpr-e2e-watermarks", "enable.auto.commit": False,
        "enable.partition.eof": True}))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end = set()
        deadline = time.monotonic() + timeout
        while at_end != set(partitions):
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {set(partitions) - at_end} not read to the end in {timeout}s")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is None:
                    at_end.discard(msg.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise KafkaException(err)
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
                for p in partitions}
    finally:
        consumer.close()


def committed(bootstrap, group, topic, partitions, timeout=10.0):
    """{partition: committed offset (negative: none)} for the group.

    Uses OffsetFetch only: this consumer never joins the group.
    """
    consumer = Consumer(confluent_conf(bootstrap, **{"group.id": group,
                                                     "enable.auto.commit": False}))
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


# ------------------------------------------------------------ kafka-python

def kp_bootstrap(bootstrap):
    return [bootstrap]


def produce_kafka_python(bootstrap, topic, records, timeout=60.0):
    """Produce all records [(partition, key, value)] with kafka-python;
    returns [(partition, offset)] in records order."""
    return produce_kafka_python_headers(bootstrap, topic, [(p, k, v, None) for p, k, v in records],
                                        timeout=timeout)


def produce_kafka_python_headers(bootstrap, topic, records, timeout=60.0, **conf):
    """Like produce_kafka_python, with records [(partition or None, key,
    value, headers)] and extra producer settings."""
    producer = kafka.KafkaProducer(**{
        "bootstrap_servers": kp_bootstrap(bootstrap), "acks": "all", "linger_ms": 5,
        "request_timeout_ms": 30000, "max_block_ms": int(timeout * 1000), **conf})
    try:
        futures = [producer.send(topic, value=v, key=k, partition=p, headers=list(h or []))
                   for p, k, v, h in records]
        producer.flush(timeout=timeout)
        out = []
        for f in futures:
            md = f.get(timeout=1)
            out.append((md.partition, md.offset))
        return out
    finally:
        producer.close(timeout=10)

def consume_kafka_python(bootstrap, topic, partitions, expected, timeout=60.0, **conf):
    consumer = kafka.KafkaConsumer(bootstrap_servers=kp_bootstrap(bootstrap), group_id=None,
                                   enable_auto_commit=False, auto_offset_reset="earliest",
                                   request_timeout_ms=30000, **conf)
    try:
        tps = [kafka.structs.TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        def poll():
            batches = consumer.poll(timeout_ms=500, max_records=1000)
            return [(m.partition, m.offset, m.key, m.value)
                    for tp in sorted(batches, key=lambda tp: tp.partition) for m in batches[tp]]
        return _read_expected(poll, expected, timeout)
    finally:
        consumer.close()


def kafka_python_admin(bootstrap):
    return kafka.admin.KafkaAdminClient(bootstrap_servers=kp_bootstrap(bootstrap),
                                        request_timeout_ms=30000)


def create_partitions_refused(bootstrap, name, count, request_timeout=30):
    """Both admin clients ask to grow `name` to `count` partitions, and each
    must be refused. -> (confluent-kafka's KafkaError, kafka-python's
    exception), for the test to check what they say."""
    client = admin(bootstrap)  # must outlive its futures
    futures = client.create_partitions([NewPartitions(name, count)], request_timeout=request_timeout)
    try:
        futures[name].result(timeout=30)
        raise AssertionError(f"confluent-kafka grew {name} to {count} partitions")
    except KafkaException as e:
        confluent_error = e.args[0]
    print(f"confluent-kafka create_partitions: {confluent_error}")
    kp = kafka_python_admin(bootstrap)
    try:
        kp.create_partitions({name: kafka.admin.NewPartitions(count)})
        raise AssertionError(f"kafka-python grew {name} to {count} partitions")
    except kafka.errors.KafkaError as e:
        kafka_python_error = e
    finally:
        kp.close()
    print(f"kafka-python create_partitions: {kafka_python_error!r}")
    return confluent_error, kafka_python_error


# ------------------------------------------------------------ kcat

def kcat(bootstrap, *args, input=None, timeout=60.0):
    """Run kcat -b bootstrap ARGS; returns stdout; fails on non-zero exit."""
    argv = ["kcat", "-b", bootstrap, *map(str, args)]
    out = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    assert out.returncode == 0, (
        f"{' '.join(argv)} exited {out.returncode}: {out.stderr.decode(errors='replace')[-2000:]}")
    return out.stdout


def kcat_metadata(bootstrap, topic=None, timeout=30.0):
    args = ["-L", "-J", "-m", "10"]
    if topic:
        args += ["-t", topic]
    return json.loads(kcat(bootstrap, *args, timeout=timeout))


# ------------------------------------------------------------ kafkajs

def kafkajs_smoke(address, topic, partitions, per_partition, sasl=None):
    """node/smoke.js: KafkaJS produces `per_partition` records to each
    partition, then consumes them with a group; `sasl` (a KafkaJS sasl
    option, or {"mechanism": "oauthbearer", "token": jwt}) logs in first.
    Returns (records sent, records consumed) as check_records takes them."""
    import harness
    node_dir = harness.Path(__file__).resolve().parent / "node"
    if not (node_dir / "node_modules" / "kafkajs").is_dir():
        raise AssertionError(f"kafkajs not installed in {node_dir}: {harness.INSTALL_HINT}")
    env = dict(harness.os.environ)
    if sasl is not None:
        env["KPR_SASL"] = json.dumps(sasl)
    out = subprocess.run(["node", str(node_dir / "smoke.js"), address, topic, str(partitions),
                          str(per_partition), "90000"],
                         capture_output=True, text=True, timeout=120, cwd=node_dir, env=env)
    assert out.returncode == 0, f"smoke.js exited {out.returncode}:\n{out.stderr[-3000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(err == 0 for _, _, err in result["produced"]), result["produced"]
    records = [(p, None, f"{p}:{i}:kafkajs".encode()) for p in range(partitions)
               for i in range(per_partition)]
    consumed = sorted(((p, o, None, v.encode()) for p, o, v in result["consumed"]),
                      key=lambda r: (r[0], r[1]))
    return records, consumed
