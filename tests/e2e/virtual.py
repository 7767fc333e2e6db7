"""Helpers for the virtual-partition tests (test_virtual_*.py).

Virtual partition (VP) v of a topic remapped V over P lives on physical
partition (PP) p = v % P with k = v // P; records of k >= 1 VPs carry the
record header kpr.vp = str(v) (see /work/shared/design/remapping.md).

Readers here return Msg tuples (partition, offset, key, value, headers,
timestamp) and stop at the end of what they were asked to read (partition
EOF, or the high watermark), never on a quiet period: a VP whose position
does not move past its siblings' data never reaches its end, and the reader
fails with the position it got stuck at.
"""

import re
import subprocess
import time
from collections import defaultdict, namedtuple
from concurrent.futures import ThreadPoolExecutor

import kafka
import kafka.codec
import kafka.structs
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)
from kafka.partitioner.default import murmur2

import clients
import kafkawire

HEADER = "kpr.vp"
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

Msg = namedtuple("Msg", "partition offset key value headers timestamp")


def mapping(virtual, physical, topics=None):
    m = {"virtual_partitions": virtual, "physical_partitions": physical}
    if topics:
        m["topics"] = {name: {"virtual_partitions": v, "physical_partitions": p}
                       for name, (v, p) in topics.items()}
    return m


def placement(v, physical):
    """(p, k) of virtual partition v."""
    return v % physical, v // physical


def tag_of(headers):
    """The kpr.vp header's value as an int, None when absent; fails when
    there are several."""
    tags = [v for k, v in (headers or []) if k == HEADER]
    assert len(tags) <= 1, f"several {HEADER} headers: {headers}"
    return int(tags[0]) if tags else None


def user_headers(headers):
    return [(k, v) for k, v in (headers or []) if k != HEADER]


# ------------------------------------------------------------ keys

def murmur2_partition(key, partitions):
    """The Java client's (and kafka-python's, and librdkafka's
    murmur2_random) partition for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def key_for(vp, partitions, prefix):
    """A key (bytes) that murmur2 places on virtual partition vp."""
    for i in range(100000):
        key = f"{prefix}-{vp}-{i}".encode()
        if murmur2_partition(key, partitions) == vp:
            return key
    raise AssertionError(f"no key for partition {vp} of {partitions}")


# ------------------------------------------------------------ readers

def read_vp_confluent(bootstrap, topic, vp, timeout=30.0, offset=OFFSET_BEGINNING, **conf):
    """Every record of one partition from `offset` to the end (partition EOF),
    with a consumer assigned that partition alone."""
    consumer = Consumer(clients.confluent_conf(bootstrap, **{
        "group.id": "kpr-e2e-vp-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100, **conf}))
    try:
        consumer.assign([TopicPartition(topic, vp, offset)])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, (
                f"confluent-kafka: {topic}[{vp}] not read to its end in {timeout}s: "
                f"{len(out)} records, position {consumer.position([TopicPartition(topic, vp)])}")
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise KafkaException(err)
                out.append(Msg(msg.partition(), msg.offset(), msg.key(), msg.value(),
                               [(k, v) for k, v in (msg.headers() or [])],
                               msg.timestamp()[1]))
    finally:
        consumer.close()


def read_vp_kafka_python(bootstrap, topic, vp, timeout=30.0, offset=None):
    """Every record of one partition from `offset` (None: the beginning)
    until the consumer's position reaches the high watermark its fetches
    report."""
    consumer = kafka.KafkaConsumer(bootstrap_servers=[bootstrap], group_id=None,
                                   enable_auto_commit=False, auto_offset_reset="earliest",
                                   request_timeout_ms=30000, fetch_max_wait_ms=100)
    try:
        tp = kafka.structs.TopicPartition(topic, vp)
        consumer.assign([tp])
        if offset is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
        out = []
        deadline = time.monotonic() + timeout
        while True:
            batches = consumer.poll(timeout_ms=200, max_records=1000)
            for m in batches.get(tp, []):
                out.append(Msg(m.partition, m.offset, m.key, m.value,
                               [(k, v) for k, v in (m.headers or [])], m.timestamp))
            high = consumer.highwater(tp)
            if high is not None and consumer.position(tp) >= high and not batches:
                return out
            assert time.monotonic() < deadline, (
                f"kafka-python: {topic}[{vp}] not read to its end in {timeout}s: "
                f"{len(out)} records, position {consumer.position(tp)}, high watermark {high}")
    finally:
        consumer.close()


def _kcat_field(s):
    return None if s == "" else s.encode()


def read_vp_kcat(bootstrap, topic, vp, timeout=30.0, offset="beginning"):
    """kcat -C -p vp -o OFFSET -e: every record to the end of the partition.
    Keys and values must not contain tabs or newlines."""
    out = clients.kcat(bootstrap, "-C", "-t", topic, "-p", vp, "-o", offset, "-e", "-q",
                       "-f", r"%p\t%o\t%T\t%k\t%h\t%s\n", timeout=timeout)
    msgs = []
    for line in out.decode().splitlines():
        p, o, ts, k, h, v = line.split("\t", 5)
        headers = []
        if h:
            for kv in h.split(","):
                hk, _, hv = kv.partition("=")
                headers.append((hk, hv.encode()))
        msgs.append(Msg(int(p), int(o), _kcat_field(k), v.encode(), headers, int(ts)))
    return msgs


READERS = {"confluent-kafka": read_vp_confluent, "kafka-python": read_vp_kafka_python,
           "kcat": read_vp_kcat}


def read_all_direct(broker_address, topic, partitions, timeout=60.0):
    """Every record of the given partitions, read from the broker itself
    (confluent-kafka: Debian's kcat cannot talk to Tansu directly), to EOF."""
    partitions = list(partitions)
    consumer = Consumer(clients.confluent_conf(broker_address, **{
        "group.id": "kpr-e2e-direct-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out = []
        at_end = set()
        deadline = time.monotonic() + timeout
        while at_end != set(partitions):
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {set(partitions) - at_end} not read to the end "
                f"directly in {timeout}s")
            for msg in consumer.consume(num_messages=5000, timeout=0.2):
                err = msg.error()
                if err is None:
                    at_end.discard(msg.partition())
                    out.append(Msg(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                   [(k, v) for k, v in (msg.headers() or [])],
                                   msg.timestamp()[1]))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise KafkaException(err)
        return out
    finally:
        consumer.close()


# ------------------------------------------------------------ raw batches

def _decompress(codec, data):
    if codec == 0:
        return data
    if codec == 1:
        return kafka.codec.gzip_decode(data)
    if codec == 2:
        return kafka.codec.snappy_decode(data)  # raw or xerial-framed
    if codec == 3:
        return kafka.codec.lz4_decode(data)
    if codec == 4:
        return kafka.codec.zstd_decode(data)
    raise AssertionError(f"unknown codec {codec}")


def _read_varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def batch_records(batch):
    """[(offset, key, value, headers)] of a magic-2 batch from parse_batches."""
    raw = batch["raw"]
    data = _decompress(batch["codec"], raw[61:])
    out = []
    pos = 0
    for _ in range(batch["count"]):
        _length, pos = _read_varint(data, pos)
        pos += 1  # attributes
        _ts, pos = _read_varint(data, pos)
        delta, pos = _read_varint(data, pos)
        fields = []
        for _f in range(2):
            n, pos = _read_varint(data, pos)
            fields.append(None if n < 0 else bytes(data[pos:pos + n]))
            pos += max(n, 0)
        nh, pos = _read_varint(data, pos)
        headers = []
        for _h in range(nh):
            n, pos = _read_varint(data, pos)
            hk = bytes(data[pos:pos + n]).decode()
            pos += n
            n, pos = _read_varint(data, pos)
            hv = None if n < 0 else bytes(data[pos:pos + n])
            pos += max(n, 0)
            headers.append((hk, hv))
        out.append((batch["base_offset"] + delta, fields[0], fields[1], headers))
    return out


def raw_batches(address, topic, partition, timeout=30.0):
    """Every record batch of one partition, read with raw Fetch v4 requests
    (from address: the broker, or the proxy), from offset 0 to the high
    watermark. Each batch dict (see kafkawire.parse_batches) gets `records`
    (decoded) added."""
    out = []
    offset = 0
    deadline = time.monotonic() + timeout
    with kafkawire.connect(address, timeout=10) as sock:
        corr = 100
        while True:
            assert time.monotonic() < deadline, f"raw fetch of {topic}[{partition}] timed out"
            corr += 1
            payload = kafkawire.round_trip(sock, kafkawire.fetch_v4_request(
                corr, {topic: {partition: offset}}, max_bytes=4 << 20))
            _, result = kafkawire.parse_fetch_v4_response(payload)
            part = result[(topic, partition)]
            assert part["error"] == 0, f"raw fetch {topic}[{partition}]@{offset}: error {part['error']}"
            batches = kafkawire.parse_batches(part["records"])
            for b in batches:
                if b["magic"] == 2:
                    b["records"] = batch_records(b)
                    if b["base_offset"] + b["last_offset_delta"] >= offset:
                        out.append(b)
                        offset = b["base_offset"] + b["last_offset_delta"] + 1
            if offset >= part["high_watermark"]:
                return out
            assert batches, f"raw fetch {topic}[{partition}]@{offset}: no batch below the high watermark {part['high_watermark']}"


# ------------------------------------------------------------ producers

def produce_confluent_full(bootstrap, topic, records, timeout=60.0, **conf):
    """records: [(partition or None, key, value, headers)]; None: the
    client's partitioner (murmur2_random, the Java client's) picks.
    Returns [(partition, offset)] per record, in records order."""
    return clients.produce_confluent_headers(bootstrap, topic, records, timeout=timeout,
                                             **{"partitioner": "murmur2_random", **conf})


def produce_kafka_python_full(bootstrap, topic, records, timeout=60.0, **conf):
    """As produce_confluent_full, with kafka-python (DefaultPartitioner:
    murmur2 for keyed records)."""
    return clients.produce_kafka_python_headers(bootstrap, topic, records, timeout=timeout, **conf)

def kcat_produce(bootstrap, topic, lines, partition=None, codec="none", headers=(),
                 keyed=False, timeout=60.0):
    """kcat -P, one record per line; keyed lines are KEY<TAB>VALUE
    (-K with a tab), placed by murmur2_random when no partition is given."""
    args = ["-P", "-t", topic, "-z", codec, "-X", "partitioner=murmur2_random"]
    if partition is not None:
        args += ["-p", partition]
    if keyed:
        args += ["-K", "\t"]
    for hk, hv in headers:
        args += ["-H", f"{hk}={hv.decode()}"]
    clients.kcat(bootstrap, *args, input=("\n".join(lines) + "\n").encode(), timeout=timeout)


# ------------------------------------------------------------ checks

def parallel(fn, jobs, workers=12):
    """[(result, None) or (None, error text)] of fn(*job) for each job,
    run on a thread pool (each job has its own client)."""
    def one(job):
        try:
            return fn(*job), None
        except Exception as e:  # noqa: BLE001 - reported by the caller
            return None, f"{type(e).__name__}: {e}"
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def by_partition(msgs):
    out = defaultdict(list)
    for m in msgs:
        out[m.partition].append(m)
    return out


def committed_on_broker(broker_address, group):
    """Every committed offset of a group, read from the broker itself:
    {(topic, partition): offset}. ListConsumerGroupOffsets with no
    partitions named (OffsetFetch for all), so nothing is filtered."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    client = clients.admin(broker_address)
    futures = client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                 request_timeout=30)
    result = futures[group].result(timeout=30)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions
            if tp.offset >= 0}


def log_lines(proxy, pattern, since=0):
    rx = re.compile(pattern, re.IGNORECASE)
    return [line for line in proxy.log_since(since).splitlines() if rx.search(line)]


def run(argv, input=None, timeout=30.0):
    """A command's CompletedProcess (text), whatever its exit status."""
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
