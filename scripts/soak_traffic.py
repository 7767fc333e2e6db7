"""The traffic of scripts/soak: idempotent producers, a consumer group, a
slowloris and a connection flood, each in a thread of its own, and the
checks run on what they recorded (see scripts/soak's docstring).

Record identity: key = "<producer>.<generation>.<seq>" (generation counts
the producer's re-creations after fatal errors, so keys never repeat), value
= "<partition>|<key>|" padded; each record is produced to an explicit
partition (seq modulo the topic's partition count), so the final read can
tell where every record belongs.
"""

import errno
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter, defaultdict

from confluent_kafka import (Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)

VALUE_BYTES = 100
TICK_S = 0.05          # producers produce rate * TICK_S records per tick
GROUP = "soak-group"
# librdkafka's own log lines (connection refused while a restart is under
# way, ...) go here; scripts/soak sends them to a file in the run directory.
CLIENT_LOG = logging.getLogger("soak.librdkafka")


def client_conf(bootstrap, client_id, **extra):
    conf = {"bootstrap.servers": bootstrap, "client.id": client_id,
            "socket.timeout.ms": 10000, "reconnect.backoff.max.ms": 2000,
            "logger": CLIENT_LOG}
    conf.update(extra)
    return conf


def error_name(err):
    return err.name() if hasattr(err, "name") else str(err)


class Worker(threading.Thread):
    """A daemon thread that runs until stop() and counts what went wrong."""

    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.errors = Counter()       # transient client errors, by name
        self.fatal = []               # fatal errors (each cost a re-creation)
        self.crash = None             # an exception that ended the thread

    def stop(self):
        self.halt.set()

    def run(self):
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            self.crash = f"{type(e).__name__}: {e}"

    def on_error(self, err):
        """librdkafka's error_cb: a fatal error is acted on by the loop."""
        with self.lock:
            if err.fatal():
                self.fatal.append(f"{error_name(err)}: {err.str()}")
            else:
                self.errors[error_name(err)] += 1


# ------------------------------------------------------------ producers

class ProducerWorker(Worker):
    """An idempotent producer (acks=all) producing `rate` records/s to
    explicit partitions of one topic; records every key it sent and how its
    delivery ended."""

    def __init__(self, name, bootstrap, topic, partitions, rate, message_timeout_ms):
        super().__init__(name)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.rate, self.message_timeout_ms = rate, message_timeout_ms
        self.sent = {}        # key -> partition it was produced to
        self.acked = {}       # key -> offset from the delivery report
        self.failed = {}      # key -> error name
        self.generation = 0
        self.left_unresolved = 0
        self.producer = None

    def make_producer(self):
        return Producer(client_conf(
            self.bootstrap, f"soak-{self.name}.{self.generation}",
            **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
               "message.timeout.ms": self.message_timeout_ms, "error_cb": self.on_error}))

    def on_delivery(self, err, msg):
        key = msg.key().decode()
        if err is None:
            self.acked[key] = msg.offset()
        else:
            self.failed[key] = error_name(err)

    def recreate(self):
        """After a fatal error: what is queued or in flight fails (purge),
        the next generation starts from sequence 0 with new keys."""
        self.producer.purge()
        self.producer.flush(10)
        self.generation += 1
        with self.lock:
            self.fatal_seen = len(self.fatal)
        self.producer = self.make_producer()
        return 0

    def loop(self):
        self.producer = self.make_producer()
        self.fatal_seen = 0
        seq, owed, last = 0, 0.0, time.monotonic()
        while not self.halt.is_set():
            now = time.monotonic()
            owed = min(owed + (now - last) * self.rate, self.rate)  # at most 1 s behind
            last = now
            while owed >= 1:
                key = f"{self.name}.{self.generation}.{seq}"
                partition = seq % self.partitions
                value = f"{partition}|{key}|".ljust(VALUE_BYTES, ".").encode()
                try:
                    self.producer.produce(self.topic, value=value, key=key.encode(),
                                          partition=partition, on_delivery=self.on_delivery)
                except BufferError:
                    break  # the queue is full (broker or proxy down): later
                except KafkaException as e:
                    if not e.args[0].fatal():
                        raise
                    self.on_error(e.args[0])
                    break
                self.sent[key] = partition
                seq += 1
                owed -= 1
            self.producer.poll(TICK_S)
            if len(self.fatal) > self.fatal_seen:
                seq = self.recreate()
        # Stopped: everything queued gets its delivery report (or times out).
        self.left_unresolved = self.producer.flush(self.message_timeout_ms / 1000 + 10)


# ------------------------------------------------------------ consumer group

class GroupConsumer(Worker):
    """A member of GROUP subscribed to one topic, auto-committing every
    second; records every key delivered to it and where."""

    def __init__(self, name, bootstrap, topic, deliveries):
        super().__init__(name)
        self.bootstrap, self.topic = bootstrap, topic
        self.deliveries = deliveries
        self.generation = 0
        self.final_commit_error = None

    def make_consumer(self):
        consumer = Consumer(client_conf(
            self.bootstrap, f"soak-{self.name}.{self.generation}",
            **{"group.id": GROUP, "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
               "auto.offset.reset": "earliest", "session.timeout.ms": 30000,
               "fetch.wait.max.ms": 100, "error_cb": self.on_error}))
        consumer.subscribe([self.topic])
        return consumer

    def loop(self):
        consumer = self.make_consumer()
        fatal_seen = 0
        try:
            while not self.halt.is_set():
                batch = []
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    err = msg.error()
                    if err is None:
                        batch.append((msg.key().decode(), msg.partition(), msg.offset()))
                    elif err.fatal():
                        self.on_error(err)
                    else:
                        with self.lock:
                            self.errors[error_name(err)] += 1
                self.deliveries.add(batch)
                if len(self.fatal) > fatal_seen:
                    consumer.close()
                    self.generation += 1
                    fatal_seen = len(self.fatal)
                    consumer = self.make_consumer()
        finally:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:
                # _NO_OFFSET: nothing consumed since the last auto-commit.
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    self.final_commit_error = error_name(e.args[0])
            consumer.close()


class Deliveries:
    """What the group received: key -> count, key -> partitions, and the
    highest offset delivered per partition."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = Counter()
        self.partitions = defaultdict(set)
        self.max_offset = {}
        self.total = 0

    def add(self, batch):
        with self.lock:
            for key, partition, offset in batch:
                self.count[key] += 1
                self.partitions[key].add(partition)
                if offset > self.max_offset.get(partition, -1):
                    self.max_offset[partition] = offset
            self.total += len(batch)

    def snapshot(self):
        with self.lock:
            return set(self.count), dict(self.max_offset), self.total


# ------------------------------------------------------------ hostile sockets

class ProxyPid:
    """The pid of the proxy incarnation now running (0 while it is down)."""

    def __init__(self):
        self.pid = 0


class Slowloris(Worker):
    """`count` raw sockets, each announcing a frame of `announce` bytes and
    then sending one byte of it every `drip_s` seconds. A closed socket is
    counted (by the proxy while the same incarnation runs, or by a restart)
    and replaced."""

    def __init__(self, port, count, announce, drip_s, proxy_pid):
        super().__init__("slowloris")
        self.port, self.count, self.announce, self.drip_s = port, count, announce, drip_s
        self.proxy_pid = proxy_pid
        self.closed_by_proxy = 0      # the incarnation that accepted it closed it
        self.closed_by_restart = 0
        self.ages_closed_by_proxy = []
        self.connect_failures = 0

    def open_one(self):
        pid = self.proxy_pid.pid
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.sendall(struct.pack(">i", self.announce) + b"\x00")
            s.setblocking(False)
            return [s, time.monotonic(), pid]
        except OSError:
            self.connect_failures += 1
            return None

    def closed(self, entry):
        s, opened, pid = entry
        s.close()
        if pid and pid == self.proxy_pid.pid:
            self.closed_by_proxy += 1
            self.ages_closed_by_proxy.append(time.monotonic() - opened)
        else:
            self.closed_by_restart += 1

    def loop(self):
        conns = []
        try:
            while not self.halt.wait(self.drip_s):
                conns += [c for c in (self.open_one() for _ in range(self.count - len(conns)))
                          if c is not None]
                alive = []
                for entry in conns:
                    if self.still_open(entry[0]):
                        alive.append(entry)
                    else:
                        self.closed(entry)
                conns = alive
        finally:
            for entry in conns:
                entry[0].close()

    @staticmethod
    def still_open(s):
        """Readable means EOF or reset (the proxy never answers a partial
        frame); else send the next byte."""
        try:
            if select.select([s], [], [], 0)[0] and not s.recv(1):
                return False
            s.send(b"\x00")
            return True
        except BlockingIOError:
            return True
        except OSError:
            return False


class Flood(Worker):
    """Every `every_s` seconds, `burst` connections opened at once, then all
    closed."""

    def __init__(self, port, burst, every_s):
        super().__init__("flood")
        self.port, self.burst, self.every_s = port, burst, every_s
        self.opened = 0
        self.failed = Counter()       # by errno name

    def loop(self):
        while not self.halt.wait(self.every_s):
            socks = []
            for _ in range(self.burst):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=2))
                except OSError as e:
                    self.failed[errno.errorcode.get(e.errno, type(e).__name__)] += 1
            self.opened += len(socks)
            for s in socks:
                s.close()


# ------------------------------------------------------------ final read

def read_everything(bootstrap, topic, partitions, timeout, **conf):
    """Every record of every partition, from the beginning to the end:
    {key: [(partition, offset, value)]}, and the transient errors seen."""
    consumer = Consumer(client_conf(bootstrap, "soak-final-read", **{
        "group.id": "soak-final-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "fetch.wait.max.ms": 100, **conf}))
    found = defaultdict(list)
    errors = Counter()
    try:
        # Offset 0, not OFFSET_BEGINNING: nothing is ever deleted here, and
        # ListOffsets(earliest) on Tansu 0.6's sqlite storage was seen to
        # stall for minutes after a restart under load (also directly).
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        at_end = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                short = sorted(set(range(partitions)) - at_end)
                where = consumer.position([TopicPartition(topic, p) for p in short[:6]])
                marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                         for p in short[:6]]
                raise AssertionError(
                    f"{topic}: partitions {short} not read to their end within {timeout:.0f} s "
                    f"({sum(map(len, found.values()))} records read; errors {dict(errors)}); "
                    "(partition, position, watermarks): "
                    f"{[(tp.partition, tp.offset, m) for tp, m in zip(where, marks)]}")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is None:
                    at_end.discard(msg.partition())
                    found[msg.key().decode()].append(
                        (msg.partition(), msg.offset(), msg.value().decode()))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    errors[error_name(err)] += 1
        return found, errors
    finally:
        consumer.close()


def check_exactly_once(producers, found):
    """Every acknowledged record present exactly once in the partition it
    was produced to; per producer generation and partition, offsets rise
    with the sequence. Returns {check: count} and examples."""
    sent, acked, failed = {}, {}, {}
    for w in producers:
        sent.update(w.sent)
        acked.update(w.acked)
        failed.update(w.failed)
    result = Counter()
    examples = defaultdict(list)

    def note(what, key, detail):
        result[what] += 1
        if len(examples[what]) < 5:
            examples[what].append(f"{key} {detail}")

    for key in acked:
        if acked[key] is None or acked[key] < 0:
            note("acked_without_offset", key, f"(offset {acked[key]})")
        if key not in found:
            note("lost", key, f"(acked at offset {acked[key]} of partition {sent[key]})")
    by_stream = defaultdict(list)
    for key, copies in found.items():
        if key not in sent:
            note("foreign", key, f"at {copies}")
            continue
        if len(copies) > 1:
            note("duplicated", key, f"{len(copies)} copies at "
                 f"{[(p, o) for p, o, _ in copies]}")
        for partition, offset, value in copies:
            if partition != sent[key] or not value.startswith(f"{sent[key]}|{key}|"):
                note("out_of_place", key, f"produced to {sent[key]}, found in {partition}")
        if acked.get(key) is not None and acked[key] >= 0 and copies[0][1] != acked[key]:
            note("offset_differs", key, f"acked offset {acked[key]}, found {copies[0][1]}")
        if key in failed:
            note("failed_but_stored", key, f"({failed[key]})")
        name, generation, seq = key.rsplit(".", 2)
        by_stream[(name, generation, sent[key])].append((copies[0][1], int(seq), key))
    for stream in by_stream.values():
        stream.sort()
        for (_, seq_a, _), (offset_b, seq_b, key_b) in zip(stream, stream[1:]):
            if seq_b < seq_a:
                note("reordered", key_b, f"at offset {offset_b} after sequence {seq_a}")
    totals = {"sent": len(sent), "acked": len(acked), "failed": len(failed),
              "found": sum(len(c) for c in found.values())}
    return totals, result, examples


def last_offsets(found):
    """{partition: highest offset holding a record} from a final read."""
    last = {}
    for copies in found.values():
        for partition, offset, _ in copies:
            last[partition] = max(last.get(partition, -1), offset)
    return last
