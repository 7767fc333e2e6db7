"""Minimal Kafka wire protocol for tests that talk to sockets directly.

Only what the raw-socket tests need, written from Apache Kafka's message
schemas: request framing (header v1 and v2), ApiVersions v0-v3 and
Metadata v1 requests and their responses; for the virtual-partition tests
record batches (magic 2, CRC-32C) and message sets (magic 0/1), Produce v3
and v8, Fetch v4, InitProducerId v4, AddPartitionsToTxn v0, DeleteRecords v0
and CreatePartitions v0. Standard library only, so
scripts/start-broker can use it as a readiness probe before any Kafka client
is installed:

    python3 tests/e2e/kafkawire.py probe 127.0.0.1:19092 [--timeout SECONDS]
"""

import socket
import struct
import sys
import time

from kafkarecords import (  # noqa: F401 - re-exported: tests call kafkawire.record_batch etc.
    _uvarint, crc32c, message_set, parse_batches, record_batch)

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18
API_DELETE_RECORDS = 21
API_INIT_PRODUCER_ID = 22
API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_ADD_PARTITIONS_TO_TXN = 24
API_CREATE_PARTITIONS = 37
API_OFFSET_COMMIT = 8
API_OFFSET_DELETE = 47
API_SASL_HANDSHAKE = 17
API_SASL_AUTHENTICATE = 36

# Error codes the tests name (Kafka's Errors.java).
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
INVALID_PARTITIONS = 37
POLICY_VIOLATION = 44
INVALID_TXN_STATE = 48
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58


class WireError(Exception):
    pass


# ---------------------------------------------------------------- encoding

def _string(s):
    """Kafka STRING / NULLABLE_STRING: int16 length then UTF-8 bytes."""
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _compact_string(s):
    b = s.encode()
    return _uvarint(len(b) + 1) + b


EMPTY_TAGGED_FIELDS = b"\x00"


def request_frame(api_key, api_version, correlation_id, body=b"",
                  client_id="kpr-e2e", flexible=False):
    """A whole request frame: size prefix, header v1 (v2 if flexible), body.

    The client id stays a classic nullable string even in header v2.
    """
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + _string(client_id)
    if flexible:
        header += EMPTY_TAGGED_FIELDS
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def api_versions_request(version, correlation_id, client_id="kpr-e2e"):
    if version >= 3:
        body = (_compact_string("kpr-e2e") + _compact_string("0.0.0")
                + EMPTY_TAGGED_FIELDS)
        return request_frame(API_API_VERSIONS, version, correlation_id, body,
                             client_id, flexible=True)
    return request_frame(API_API_VERSIONS, version, correlation_id, b"", client_id)


def metadata_v1_request(correlation_id, topics=None, client_id="kpr-e2e"):
    """Metadata v1; topics=None asks for all topics (null array)."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(_string(t) for t in topics)
    return request_frame(API_METADATA, 1, correlation_id, body, client_id)


def _bytes(b):
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


# ---------------------------------------------------------------- requests

def produce_request(correlation_id, topics, version=3, transactional_id=None,
                    acks=-1, timeout_ms=10000):
    """Produce v3-v8. topics: {name: {partition: record bytes}}."""
    assert 3 <= version <= 8
    body = _string(transactional_id) + struct.pack(">hii", acks, timeout_ms, len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts))
        for p, records in parts.items():
            body += struct.pack(">i", p) + _bytes(records)
    return request_frame(API_PRODUCE, version, correlation_id, body)


def fetch_v4_request(correlation_id, topics, max_wait_ms=100, max_bytes=1 << 20):
    """Fetch v4. topics: {name: {partition: fetch offset}}."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + struct.pack(">i", len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts))
        for p, offset in parts.items():
            body += struct.pack(">iqi", p, offset, max_bytes)
    return request_frame(API_FETCH, 4, correlation_id, body)


def fetch_v4_entries_request(correlation_id, entries, max_wait_ms=100, max_bytes=1 << 20):
    """Fetch v4 with the topic entries exactly as given, so one topic can be
    named in several entries (librdkafka does when it rotates its fetch
    list). entries: [(topic, [(partition, fetch offset, partition max bytes)])]."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + struct.pack(">i", len(entries))
    for name, parts in entries:
        body += _string(name) + struct.pack(">i", len(parts))
        for p, offset, partition_max_bytes in parts:
            body += struct.pack(">iqi", p, offset, partition_max_bytes)
    return request_frame(API_FETCH, 4, correlation_id, body)


def fetch_by_id_request(correlation_id, version, topics, max_wait_ms=100, max_bytes=1 << 20):
    """Fetch v13-v15 (flexible, topics named by id).
    topics: {topic id (16 bytes): {partition: fetch offset}}."""
    assert 13 <= version <= 15
    body = b""
    if version <= 14:
        body += struct.pack(">i", -1)  # replica_id
    body += struct.pack(">iiib", max_wait_ms, 1, max_bytes, 0)  # wait, min/max bytes, isolation
    body += struct.pack(">ii", 0, -1)  # no fetch session
    body += _uvarint(len(topics) + 1)
    for topic_id, parts in topics.items():
        body += topic_id + _uvarint(len(parts) + 1)
        for p, offset in parts.items():
            # partition, current leader epoch, offset, last fetched epoch,
            # log start offset, partition max bytes, no tagged fields
            body += struct.pack(">iiqiqi", p, -1, offset, -1, -1, max_bytes) + EMPTY_TAGGED_FIELDS
        body += EMPTY_TAGGED_FIELDS
    body += _uvarint(1)        # forgotten_topics_data: empty
    body += _compact_string("")  # rack_id
    body += EMPTY_TAGGED_FIELDS
    return request_frame(API_FETCH, version, correlation_id, body, flexible=True)


def init_producer_id_request(correlation_id, transactional_id=None, timeout_ms=60000):
    """InitProducerId v4 (flexible; Tansu 0.6 fails v0-v2, which have no
    producer id/epoch fields, with UNKNOWN_SERVER_ERROR)."""
    tid = _uvarint(0) if transactional_id is None else _compact_string(transactional_id)
    body = tid + struct.pack(">iqh", timeout_ms, -1, -1) + EMPTY_TAGGED_FIELDS
    return request_frame(API_INIT_PRODUCER_ID, 4, correlation_id, body, flexible=True)


def add_partitions_to_txn_request(correlation_id, transactional_id, producer_id,
                                  producer_epoch, topics):
    """AddPartitionsToTxn v0. topics: {name: [partition, ...]}."""
    body = (_string(transactional_id) + struct.pack(">qh", producer_id, producer_epoch)
            + struct.pack(">i", len(topics)))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts)) + b"".join(
            struct.pack(">i", p) for p in parts)
    return request_frame(API_ADD_PARTITIONS_TO_TXN, 0, correlation_id, body)


def offset_commit_v2_request(correlation_id, group, topics, generation=-1, member_id=""):
    """OffsetCommit v2 (a standalone commit by default: generation -1, no
    member). topics: {name: {partition: offset}}."""
    body = _string(group) + struct.pack(">i", generation) + _string(member_id) + struct.pack(">q", -1)
    body += struct.pack(">i", len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts))
        for p, offset in parts.items():
            body += struct.pack(">iq", p, offset) + _string("")
    return request_frame(API_OFFSET_COMMIT, 2, correlation_id, body)


def offset_fetch_v3_request(correlation_id, group, topics):
    """OffsetFetch v3. topics: {name: [partition, ...]}."""
    body = _string(group) + struct.pack(">i", len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts)) + b"".join(struct.pack(">i", p) for p in parts)
    return request_frame(API_OFFSET_FETCH, 3, correlation_id, body)


def delete_records_request(correlation_id, topics, timeout_ms=10000):
    """DeleteRecords v0. topics: {name: {partition: offset}}."""
    body = struct.pack(">i", len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts))
        for p, offset in parts.items():
            body += struct.pack(">iq", p, offset)
    body += struct.pack(">i", timeout_ms)
    return request_frame(API_DELETE_RECORDS, 0, correlation_id, body)


def offset_delete_request(correlation_id, group, topics):
    """OffsetDelete v0 (the only version). topics: {name: [partition]}."""
    body = _string(group) + struct.pack(">i", len(topics))
    for name, parts in topics.items():
        body += _string(name) + struct.pack(">i", len(parts))
        body += b"".join(struct.pack(">i", p) for p in parts)
    return request_frame(API_OFFSET_DELETE, 0, correlation_id, body)


def parse_offset_delete_request(frame):
    """(group, {name: [partition]}) of an OffsetDelete v0 request frame
    (without size prefix)."""
    r = Reader(frame)
    r.take(8)
    r.string()  # client id
    group = r.string()
    topics = dict(r.array(lambda r: (r.string(), r.array(lambda r: r.int32()))))
    return group, topics


def offset_delete_response(correlation_id, error_code, topics):
    """OffsetDelete v0 response payload (header v0). topics: {name: {partition: error}}."""
    out = struct.pack(">ihii", correlation_id, error_code, 0, len(topics))
    for name, parts in topics.items():
        out += _string(name) + struct.pack(">i", len(parts))
        out += b"".join(struct.pack(">ih", p, e) for p, e in parts.items())
    return out


def parse_offset_delete_response(payload):
    """(correlation_id, error_code, {name: {partition: error}})."""
    r = Reader(payload)
    corr = r.int32()
    error = r.int16()
    r.int32()  # throttle
    topics = dict(r.array(lambda r: (r.string(), dict(r.array(lambda r: (r.int32(), r.int16()))))))
    return corr, error, topics


def parse_offset_commit_request(version, frame):
    """(group, {(topic, partition): offset}) of an OffsetCommit v2-v9
    request frame (without size prefix)."""
    assert 2 <= version <= 9, f"OffsetCommit v{version} not handled"
    flexible = version >= 8
    r = Reader(frame)
    r.take(8)
    r.string()  # client id

    def string():
        if flexible:
            n = r.uvarint() - 1
            return None if n < 0 else r.take(n).decode()
        return r.string()

    def array(item):
        return r.compact_array(item) if flexible else r.array(item)

    def tags():
        if flexible:
            r.skip_tagged_fields()

    tags()
    group = string()
    r.int32()   # generation id or member epoch
    string()    # member id
    if version >= 7:
        string()  # group instance id
    if version <= 4:
        r.int64()  # retention time

    def partition(_):
        p, offset = r.int32(), r.int64()
        if version >= 6:
            r.int32()  # leader epoch
        string()       # metadata
        tags()
        return p, offset

    def topic(_):
        name = string()
        parts = array(partition)
        tags()
        return name, parts

    offsets = {(name, p): off for name, parts in array(topic) for p, off in parts}
    return group, offsets


def request_group_id(api_version, frame, flexible):
    """The group id an OffsetCommit/OffsetFetch/OffsetDelete request frame
    (without size prefix) starts its body with; flexible: header v2 and
    compact strings (OffsetCommit v8+, OffsetFetch v6+)."""
    r = Reader(frame)
    r.take(8)
    r.string()  # client id, a classic string in every header version
    if flexible:
        r.skip_tagged_fields()
        return r.take(r.uvarint() - 1).decode()
    return r.string()


def sasl_handshake_request(correlation_id, mechanism, version=1):
    return request_frame(API_SASL_HANDSHAKE, version, correlation_id, _string(mechanism))


def sasl_authenticate_request(correlation_id, auth_bytes, version=1):
    """SaslAuthenticate v0/v1 (not flexible)."""
    return request_frame(API_SASL_AUTHENTICATE, version, correlation_id, _bytes(auth_bytes))


def create_partitions_request(correlation_id, topics, timeout_ms=10000, validate_only=False):
    """CreatePartitions v0. topics: {name: new total count}."""
    body = struct.pack(">i", len(topics))
    for name, count in topics.items():
        body += _string(name) + struct.pack(">ii", count, -1)  # assignments: null
    body += struct.pack(">ib", timeout_ms, 1 if validate_only else 0)
    return request_frame(API_CREATE_PARTITIONS, 0, correlation_id, body)


# ---------------------------------------------------------------- decoding

class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise WireError(f"truncated: need {n} bytes at {self.pos}, have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int8(self):
        return struct.unpack(">b", self.take(1))[0]

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def int64(self):
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self):
        n = self.int16()
        return None if n < 0 else self.take(n).decode()

    def array(self, item):
        n = self.int32()
        return [] if n < 0 else [item(self) for _ in range(n)]

    def compact_array(self, item):
        n = self.uvarint() - 1
        return [] if n < 0 else [item(self) for _ in range(n)]

    def skip_tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()              # tag
            self.take(self.uvarint())   # size, data

    def done(self):
        return self.pos == len(self.data)


def response_correlation_id(payload):
    """Every response starts with the correlation id (header v0 and v1)."""
    return struct.unpack(">i", payload[:4])[0]


def parse_api_versions_response(version, payload):
    """Returns (correlation_id, error_code, {api_key: (min, max)}).

    The ApiVersions response header is always v0, even for v3+.
    """
    r = Reader(payload)
    corr = r.int32()
    error = r.int16()

    def key(r):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        if version >= 3:
            r.skip_tagged_fields()
        return k, (lo, hi)

    keys = dict(r.compact_array(key) if version >= 3 else r.array(key))
    if version >= 1:
        r.int32()  # throttle_time_ms
    if version >= 3:
        r.skip_tagged_fields()
    return corr, error, keys


def parse_sasl_handshake_response(payload):
    """-> (correlation_id, error_code, [mechanisms])."""
    r = Reader(payload)
    corr = r.int32()
    error = r.int16()
    return corr, error, r.array(lambda r: r.string())


def parse_sasl_authenticate_response(version, payload):
    """v0/v1 -> (correlation_id, error_code, error_message, auth_bytes,
    session_lifetime_ms or None)."""
    r = Reader(payload)
    corr = r.int32()
    error = r.int16()
    message = r.string()
    (size,) = struct.unpack(">i", r.take(4))
    auth = r.take(size) if size >= 0 else None
    lifetime = r.int64() if version >= 1 else None
    return corr, error, message, auth, lifetime


def parse_metadata_v1_response(payload):
    """Returns (correlation_id, brokers, controller_id, topics).

    brokers: [(node_id, host, port, rack)]
    topics:  {name: {"error": code, "internal": bool,
                     "partitions": {index: (error, leader)}}}
    """
    r = Reader(payload)
    corr = r.int32()
    brokers = r.array(lambda r: (r.int32(), r.string(), r.int32(), r.string()))
    controller = r.int32()

    def partition(r):
        error, index, leader = r.int16(), r.int32(), r.int32()
        r.array(Reader.int32)  # replicas
        r.array(Reader.int32)  # isr
        return index, (error, leader)

    def topic(r):
        error, name, internal = r.int16(), r.string(), bool(r.int8())
        return name, {"error": error, "internal": internal,
                      "partitions": dict(r.array(partition))}

    topics = dict(r.array(topic))
    return corr, brokers, controller, topics


def parse_produce_response(version, payload):
    """Produce v3-v8 -> (correlation_id, {(topic, partition): dict}).

    Each dict: error, base_offset, and from v8 error_message and record_errors.
    """
    r = Reader(payload)
    corr = r.int32()

    def partition(r):
        out = {"partition": r.int32(), "error": r.int16(), "base_offset": r.int64()}
        r.int64()  # log_append_time
        if version >= 5:
            r.int64()  # log_start_offset
        if version >= 8:
            out["record_errors"] = r.array(lambda r: (r.int32(), r.string()))
            out["error_message"] = r.string()
        return out

    result = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(partition))):
        for part in parts:
            result[(name, part["partition"])] = part
    r.int32()  # throttle_time_ms
    return corr, result


def _fetch_v4_partition(r):
    """One partition of a Fetch v4 response: dict(partition, error,
    high_watermark, last_stable_offset, records_length, records)."""
    out = {"partition": r.int32(), "error": r.int16(), "high_watermark": r.int64(),
           "last_stable_offset": r.int64()}
    r.array(lambda r: (r.int64(), r.int64()))  # aborted transactions
    n = r.int32()
    out["records_length"] = n
    out["records"] = b"" if n < 0 else r.take(n)
    return out


def parse_fetch_v4_response(payload):
    """-> (correlation_id, {(topic, partition): dict(error, high_watermark, records)})."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms

    result = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(_fetch_v4_partition))):
        for part in parts:
            result[(name, part["partition"])] = part
    return corr, result


def parse_fetch_v4_entries(payload):
    """Fetch v4 -> (correlation_id, [(topic, [dict(partition, error,
    high_watermark, last_stable_offset, records_length, records)])]) in the
    order of the response. records_length is the length on the wire: -1
    for a null record set, which librdkafka cannot parse."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms

    entries = r.array(lambda r: (r.string(), r.array(_fetch_v4_partition)))
    if not r.done():
        raise WireError(f"{len(r.data) - r.pos} bytes left after the Fetch v4 response")
    return corr, entries


def parse_fetch_by_id_response(payload):
    """Fetch v13-v15 -> (correlation_id, top-level error,
    {(topic id, partition): dict(error, high_watermark, records)})."""
    r = Reader(payload)
    corr = r.int32()
    r.skip_tagged_fields()  # response header v1
    r.int32()  # throttle_time_ms
    error = r.int16()
    r.int32()  # session_id

    def partition(r):
        out = {"partition": r.int32(), "error": r.int16(), "high_watermark": r.int64(),
               "last_stable_offset": r.int64(), "log_start_offset": r.int64()}
        r.compact_array(lambda r: (r.int64(), r.int64(), r.skip_tagged_fields()))
        r.int32()  # preferred_read_replica
        n = r.uvarint() - 1
        out["records"] = b"" if n < 0 else r.take(n)
        r.skip_tagged_fields()
        return out

    def topic(r):
        topic_id = r.take(16)
        parts = r.compact_array(partition)
        r.skip_tagged_fields()
        return topic_id, parts

    result = {}
    for topic_id, parts in r.compact_array(topic):
        for part in parts:
            result[(topic_id, part["partition"])] = part
    r.skip_tagged_fields()
    return corr, error, result


def parse_init_producer_id_response(payload):
    """v4 -> (correlation_id, error, producer_id, producer_epoch)."""
    r = Reader(payload)
    corr = r.int32()
    r.skip_tagged_fields()  # response header v1
    r.int32()  # throttle_time_ms
    return corr, r.int16(), r.int64(), r.int16()


def parse_offset_commit_v2_response(payload):
    """v2 -> (correlation_id, {(topic, partition): error})."""
    r = Reader(payload)
    corr = r.int32()
    out = {}

    def topic(r):
        name = r.string()
        for p, e in r.array(lambda r: (r.int32(), r.int16())):
            out[(name, p)] = e

    r.array(topic)
    return corr, out


def parse_offset_fetch_v3_response(payload):
    """v3 -> (correlation_id, group error, {(topic, partition): (offset, error)})."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms
    out = {}

    def topic(r):
        name = r.string()
        for p, offset, _meta, e in r.array(lambda r: (r.int32(), r.int64(), r.string(), r.int16())):
            out[(name, p)] = (offset, e)

    r.array(topic)
    return corr, r.int16(), out


def _per_partition(r, partition):
    """Reads an array of (topic name, array of partitions), where
    partition(r) reads one as (partition number, what it says).
    -> {(topic, partition number): what it says}."""
    return {(name, p): said
            for name, parts in r.array(lambda r: (r.string(), r.array(partition)))
            for p, said in parts}


def parse_add_partitions_to_txn_response(payload):
    """v0 -> (correlation_id, {(topic, partition): error})."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms
    return corr, _per_partition(r, lambda r: (r.int32(), r.int16()))


def parse_delete_records_response(payload):
    """v0 -> (correlation_id, {(topic, partition): (low_watermark, error)})."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms
    return corr, _per_partition(r, lambda r: (r.int32(), (r.int64(), r.int16())))


def parse_create_partitions_response(payload):
    """v0 -> (correlation_id, {topic: (error, message)})."""
    r = Reader(payload)
    corr = r.int32()
    r.int32()  # throttle_time_ms
    results = r.array(lambda r: (r.string(), (r.int16(), r.string())))
    return corr, dict(results)


# ---------------------------------------------------------------- sockets

def connect(address, timeout=5.0):
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(sock, n):
    """n bytes, or b'' when the peer closed before sending any of them."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise WireError(f"connection closed mid-frame after {len(buf)} of {n} bytes")
            return b""
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    """One response payload (without the size prefix); None on EOF.

    Raises socket.timeout if nothing arrives within the socket's timeout.
    """
    head = recv_exact(sock, 4)
    if not head:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0:
        raise WireError(f"negative frame size {size}")
    payload = recv_exact(sock, size)
    if size and not payload:
        raise WireError("connection closed after a frame size prefix")
    return payload


def wait_closed(sock, timeout):
    """True when the peer closes (or resets) the connection within timeout.

    Data that arrives first is read and ignored.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def api_versions(sock, version=0, correlation_id=1):
    """Send ApiVersions, return (error_code, {api_key: (min, max)})."""
    sock.sendall(api_versions_request(version, correlation_id))
    payload = read_frame(sock)
    if payload is None:
        raise WireError("connection closed before the ApiVersions response")
    corr, error, keys = parse_api_versions_response(version, payload)
    if corr != correlation_id:
        raise WireError(f"correlation id {corr}, expected {correlation_id}")
    return error, keys


def metadata_v1(sock, topics=None, correlation_id=2):
    sock.sendall(metadata_v1_request(correlation_id, topics))
    payload = read_frame(sock)
    if payload is None:
        raise WireError("connection closed before the Metadata response")
    corr, brokers, controller, tps = parse_metadata_v1_response(payload)
    if corr != correlation_id:
        raise WireError(f"correlation id {corr}, expected {correlation_id}")
    return brokers, controller, tps


def round_trip(sock, frame):
    """Send one request frame and return the response payload (the
    correlation id is checked against the frame's)."""
    want = struct.unpack(">i", frame[8:12])[0]
    sock.sendall(frame)
    payload = read_frame(sock)
    if payload is None:
        raise WireError("connection closed before the response")
    if response_correlation_id(payload) != want:
        raise WireError(f"correlation id {response_correlation_id(payload)}, expected {want}")
    return payload


def sasl_plain(sock, username, password, correlation_id=10, version=1):
    """SaslHandshake v1 (PLAIN) then SaslAuthenticate `version`; returns
    the SaslAuthenticate answer as parse_sasl_authenticate_response does."""
    _, error, mechanisms = parse_sasl_handshake_response(
        round_trip(sock, sasl_handshake_request(correlation_id, "PLAIN")))
    if error:
        raise WireError(f"SaslHandshake error {error}, mechanisms {mechanisms}")
    token = b"\0" + username.encode() + b"\0" + password.encode()
    return parse_sasl_authenticate_response(
        version, round_trip(sock, sasl_authenticate_request(correlation_id + 1, token, version)))


def probe(address, timeout=5.0):
    """ApiVersions v0 + Metadata v1 round trip; returns the broker list."""
    with connect(address, timeout) as s:
        error, keys = api_versions(s, 0, 1)
        if error:
            raise WireError(f"ApiVersions error code {error}")
        if API_METADATA not in keys:
            raise WireError("ApiVersions does not list Metadata")
        brokers, _, _ = metadata_v1(s, None, 2)
        return brokers


def main(argv):
    if len(argv) < 2 or argv[0] != "probe":
        print("usage: kafkawire.py probe HOST:PORT [--timeout SECONDS]", file=sys.stderr)
        return 2
    timeout = float(argv[3]) if len(argv) > 3 and argv[2] == "--timeout" else 5.0
    try:
        brokers = probe(argv[1], timeout)
    except (OSError, WireError) as e:
        print(f"probe {argv[1]}: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{node}@{host}:{port}" for node, host, port, _ in brokers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
