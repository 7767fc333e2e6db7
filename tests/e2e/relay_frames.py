"""Kafka frames the relay (relay.py) rewrites on their way: an ApiVersions
answer of its own, error codes set in answers, brokers added to and topics
hidden from Metadata, a preferred read replica in Fetch answers. Split from
relay.py, which imports what it uses from here."""

import struct

import kafkawire


def encode_api_versions_response(version, correlation_id, error, keys):
    """ApiVersions response v0-v3 (header v0 always), no tagged fields."""
    out = struct.pack(">ih", correlation_id, error)
    items = sorted(keys.items())
    if version >= 3:
        out += kafkawire._uvarint(len(items) + 1)
        for k, (lo, hi) in items:
            out += struct.pack(">hhh", k, lo, hi) + b"\x00"
    else:
        out += struct.pack(">i", len(items))
        for k, (lo, hi) in items:
            out += struct.pack(">hhh", k, lo, hi)
    if version >= 1:
        out += struct.pack(">i", 0)  # throttle_time_ms
    if version >= 3:
        out += b"\x00"
    return out


API_DELETE_GROUPS = 42


def set_error_codes(api_key, version, frame, code):
    """An OffsetCommit, OffsetFetch or DeleteGroups response (any version)
    with every error code (partition, group, top level) set to `code`."""
    out = bytearray(frame)
    r = kafkawire.Reader(frame)
    flexible = version >= (8 if api_key == kafkawire.API_OFFSET_COMMIT else 6)

    def array(item):
        n = (r.uvarint() - 1) if flexible else r.int32()
        for _ in range(max(n, 0)):
            item()
            if flexible:
                r.skip_tagged_fields()

    def string():
        n = (r.uvarint() - 1) if flexible else r.int16()
        if n > 0:
            r.take(n)

    def error():
        struct.pack_into(">h", out, r.pos, code)
        r.int16()

    if api_key == kafkawire.API_PRODUCE:
        return set_produce_error_codes(version, frame, code)
    if api_key == API_DELETE_GROUPS:
        flexible = version >= 2
    r.int32()  # correlation id
    if flexible:
        r.skip_tagged_fields()
    if version >= 3 or api_key == API_DELETE_GROUPS:
        r.int32()  # throttle_time_ms
    if api_key == API_DELETE_GROUPS:
        array(lambda: (string(), error()))
        return bytes(out)
    if api_key == kafkawire.API_OFFSET_COMMIT:
        array(lambda: (string(), array(lambda: (r.int32(), error()))))
        return bytes(out)
    if api_key != kafkawire.API_OFFSET_FETCH:
        raise ValueError(f"cannot set error codes of API {api_key}")

    def partition():
        r.int32()
        r.int64()
        if version >= 5:
            r.int32()
        string()
        error()

    def topics():
        array(lambda: (string(), array(partition)))

    if version >= 8:
        array(lambda: (string(), topics(), error()))
    else:
        topics()
        if version >= 2:
            error()
    return bytes(out)


def set_produce_error_codes(version, frame, code):
    """A Produce v3-v8 response with every partition's error code set to
    `code` (offsets and the rest as the broker answered)."""
    if not 3 <= version <= 8:
        raise ValueError(f"cannot set error codes of Produce v{version}")
    out = bytearray(frame)
    r = kafkawire.Reader(frame)
    r.int32()  # correlation id

    def partition(r):
        r.int32()
        struct.pack_into(">h", out, r.pos, code)
        r.int16()
        r.int64()  # base_offset
        r.int64()  # log_append_time
        if version >= 5:
            r.int64()  # log_start_offset
        if version >= 8:
            r.array(lambda r: (r.int32(), r.string()))
            r.string()

    r.array(lambda r: (r.string(), r.array(partition)))
    return bytes(out)



# ------------------------------------------------------ Metadata and Fetch

def fetch_carries_rack(version, frame, rack):
    """Whether a Fetch request frame's rack_id is `rack`. rack_id (v11+) is
    the body's last field (before the top-level tagged fields from v12), so
    the frame ends with it when no tagged fields follow, as all clients of
    these tests send it."""
    if version < 11:
        return False
    if version >= 12:
        return frame.endswith(kafkawire._compact_string(rack) + b"\x00")
    return frame.endswith(kafkawire._string(rack))


def _skip_string(r, flexible):
    n = r.uvarint() - 1 if flexible else r.int16()
    if n > 0:
        r.take(n)


def _read_string(r, flexible):
    n = r.uvarint() - 1 if flexible else r.int16()
    return None if n < 0 else r.take(n).decode()


def _array_len(r, flexible):
    return r.uvarint() - 1 if flexible else r.int32()


def _skip_tags(r, flexible):
    if flexible:
        r.skip_tagged_fields()


def _skip_to_brokers(r, version):
    """Move a Metadata response (v1-v12) reader to its brokers array."""
    assert 1 <= version <= 12, f"Metadata v{version} not handled by the relay"
    r.int32()  # correlation id
    _skip_tags(r, version >= 9)
    if version >= 3:
        r.int32()  # throttle


def _skip_brokers(r, flexible, count):
    for _ in range(count):
        r.int32()
        _skip_string(r, flexible)
        r.int32()
        _skip_string(r, flexible)  # rack
        _skip_tags(r, flexible)


def add_brokers(version, frame, brokers):
    """A Metadata response (v1-v12) that also lists `brokers` ({node id:
    port}, host 127.0.0.1, no rack) after the broker's own."""
    flexible = version >= 9
    r = kafkawire.Reader(frame)
    _skip_to_brokers(r, version)
    count_at = r.pos
    count = _array_len(r, flexible)
    first_at = r.pos
    _skip_brokers(r, flexible, count)
    added = b""
    for node_id, port in sorted(brokers.items()):
        if flexible:
            added += (struct.pack(">i", node_id) + kafkawire._compact_string("127.0.0.1")
                      + struct.pack(">i", port) + kafkawire._uvarint(0) + b"\x00")
        else:
            added += (struct.pack(">i", node_id) + kafkawire._string("127.0.0.1")
                      + struct.pack(">i", port) + kafkawire._string(None))
    total = count + len(brokers)
    head = kafkawire._uvarint(total + 1) if flexible else struct.pack(">i", total)
    return frame[:count_at] + head + frame[first_at:r.pos] + added + frame[r.pos:]


def hide_topics(version, frame, hidden):
    """A Metadata response (v1-v12) with the error code of every topic named
    in `hidden` set to UNKNOWN_TOPIC_OR_PARTITION (3), in place; and the
    names patched."""
    flexible = version >= 9
    r = kafkawire.Reader(frame)
    _skip_to_brokers(r, version)
    _skip_brokers(r, flexible, _array_len(r, flexible))
    if version >= 2:
        _skip_string(r, flexible)  # cluster id
    r.int32()  # controller
    out = bytearray(frame)
    names = []
    for _ in range(_array_len(r, flexible)):
        error_at = r.pos
        r.int16()
        name = _read_string(r, flexible)
        if name in hidden:
            struct.pack_into(">h", out, error_at, 3)
            names.append(name)
        if version >= 10:
            r.take(16)
        r.int8()  # is_internal
        for _ in range(_array_len(r, flexible)):
            r.take(2 + 4 + 4 + (4 if version >= 7 else 0))
            for _ in range(2 + (1 if version >= 5 else 0)):  # replicas, isr, offline
                r.take(4 * _array_len(r, flexible))
            _skip_tags(r, flexible)
        if version >= 8:
            r.int32()
        _skip_tags(r, flexible)
    return bytes(out), names


def prefer_replica_answer(version, frame, node_id, skip, only=None):
    """A Fetch response (v11-v16) in which every partition not in `skip`
    (and, given `only`, whose index is in it)
    carries preferred_read_replica = node_id and no records, as a rack-aware
    leader answers a consumer in another replica's rack. -> (frame, the
    (topic, partition) rewritten); topic is a name (v11-v12) or an id."""
    assert 11 <= version <= 16, f"Fetch v{version} not handled by the relay"
    flexible = version >= 12
    r = kafkawire.Reader(frame)
    r.int32()
    _skip_tags(r, flexible)
    r.take(4 + 2 + 4)  # throttle, error, session id
    out = bytearray(frame[:r.pos])
    rewritten = []
    count = _array_len(r, flexible)
    out += kafkawire._uvarint(count + 1) if flexible else struct.pack(">i", count)
    for _ in range(count):
        start = r.pos
        if version >= 13:
            topic = r.take(16)
        else:
            topic = _read_string(r, flexible)
        out += frame[start:r.pos]
        parts = _array_len(r, flexible)
        out += kafkawire._uvarint(parts + 1) if flexible else struct.pack(">i", parts)
        for _ in range(parts):
            start = r.pos
            partition = r.int32()
            r.take(2 + 8 + 8 + 8)
            aborted = _array_len(r, flexible)
            for _ in range(max(aborted, 0)):
                r.take(16)
                _skip_tags(r, flexible)
            head = frame[start:r.pos]
            preferred = r.int32()
            n = r.uvarint() - 1 if flexible else r.int32()
            records = r.take(n) if n > 0 else b""
            tail_start = r.pos
            _skip_tags(r, flexible)
            tail = frame[tail_start:r.pos]
            if (topic, partition) in skip or (only is not None and partition not in only):
                out += head + struct.pack(">i", preferred)
                out += (kafkawire._uvarint(n + 1) if flexible else struct.pack(">i", n)) + records
            else:
                rewritten.append((topic, partition))
                out += head + struct.pack(">i", node_id)
                out += kafkawire._uvarint(1) if flexible else struct.pack(">i", 0)
            out += tail
        start = r.pos
        _skip_tags(r, flexible)
        out += frame[start:r.pos]
    out += frame[r.pos:]
    return bytes(out), rewritten
