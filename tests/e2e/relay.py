"""A TCP relay between the proxy and the broker that can misbehave on cue.

Start the broker advertising the relay's port (broker_factory(...,
advertised_port=relay.port)) and point the proxy at the relay: every
upstream connection of the proxy then goes through it. The relay reads the
Kafka frames going each way, remembers each request's API key and version by
correlation id, and can:

- lose_next_response(api_key): forward the request, let the broker act on
  it, then close both sides instead of forwarding its response, as when a
  connection dies after the broker wrote a batch and before the client heard
  of it. The client (through the proxy) must retry; the broker's idempotence
  must drop the duplicate.
- offer_apis({api_key: (min, max)}): add APIs to the broker's ApiVersions
  answers, e.g. CreatePartitions, which Tansu 0.6 lacks, so that the proxy
  offers it and its own refusal for remapped topics can be seen by a real
  client (the proxy answers those requests itself; nothing reaches Tansu).
- hide_topic(name): patch the topic's error code in Metadata answers to
  UNKNOWN_TOPIC_OR_PARTITION, as a broker whose metadata cache has not (or
  no longer) got the topic answers; show_topic(name) ends it.
- prefer_replica(rack, node_id, once): answer Fetch requests that carry
  client rack id `rack` as a rack-aware leader does (KIP-392): every
  partition gets preferred_read_replica = node_id and no records. With
  once=True only the first such answer per (topic, partition) is rewritten,
  since a single Tansu is its own "replica": the fetch that follows the
  preference reaches the same broker and must then be answered normally.
"""

import socket
import struct
import threading

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


class Relay:
    def __init__(self, upstream_port, port=None):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port or 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.lose = {}           # api_key -> responses still to lose
        self.lost = []           # (api_key, api_version, correlation_id) of lost responses
        self.extra_apis = {}
        self.requests = {}       # api_key -> count forwarded
        self.hidden = {}         # topic name -> Metadata answers rewritten
        self.rack = None         # (rack id, node id, once, partitions) of prefer_replica
        self.preferred = []      # (topic, partition) answered with a preferred replica
        self.fetches_with_rack = 0
        self.sockets = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def lose_next_response(self, api_key, count=1):
        with self.lock:
            self.lose[api_key] = self.lose.get(api_key, 0) + count

    def offer_apis(self, apis):
        self.extra_apis.update(apis)

    def hide_topic(self, name):
        with self.lock:
            self.hidden.setdefault(name, 0)

    def show_topic(self, name):
        with self.lock:
            return self.hidden.pop(name, 0)

    def hidden_answers(self, name):
        with self.lock:
            return self.hidden.get(name, 0)

    def prefer_replica(self, rack, node_id, once, partitions=None):
        """partitions: only these partition indexes (None: all)."""
        with self.lock:
            self.rack = (rack, node_id, once, partitions)

    def pending_losses(self):
        with self.lock:
            return sum(self.lose.values())

    def close(self):
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        self._shut(*self.sockets)

    # ------------------------------------------------------------ internals

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            inflight = {}
            threading.Thread(target=self._requests, args=(client, upstream, inflight),
                             daemon=True).start()
            threading.Thread(target=self._responses, args=(client, upstream, inflight),
                             daemon=True).start()

    @staticmethod
    def _read_frame(sock):
        head = kafkawire.recv_exact(sock, 4)
        if not head:
            return None
        (size,) = struct.unpack(">i", head)
        return kafkawire.recv_exact(sock, size)

    @staticmethod
    def _shut(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _requests(self, client, upstream, inflight):
        try:
            while True:
                frame = self._read_frame(client)
                if frame is None:
                    break
                api_key, api_version, corr = struct.unpack(">hhi", frame[:8])
                with self.lock:
                    self.requests[api_key] = self.requests.get(api_key, 0) + 1
                    rack = self.rack
                    carries_rack = (api_key == kafkawire.API_FETCH and rack is not None
                                    and fetch_carries_rack(api_version, frame, rack[0]))
                    if carries_rack:
                        self.fetches_with_rack += 1
                inflight[corr] = (api_key, api_version, carries_rack)
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, kafkawire.WireError):
            pass
        self._shut(client, upstream)

    def _responses(self, client, upstream, inflight):
        try:
            while True:
                frame = self._read_frame(upstream)
                if frame is None:
                    break
                corr = struct.unpack(">i", frame[:4])[0]
                api_key, api_version, carries_rack = inflight.pop(corr, (None, None, False))
                with self.lock:
                    if self.lose.get(api_key):
                        self.lose[api_key] -= 1
                        self.lost.append((api_key, api_version, corr))
                        break
                if api_key == kafkawire.API_API_VERSIONS and self.extra_apis:
                    _, error, keys = kafkawire.parse_api_versions_response(api_version, frame)
                    if error == 0:
                        keys.update(self.extra_apis)
                        frame = encode_api_versions_response(api_version, corr, error, keys)
                if api_key == kafkawire.API_METADATA:
                    with self.lock:
                        hidden = dict(self.hidden)
                    if hidden:
                        frame, names = hide_topics(api_version, frame, hidden)
                        with self.lock:
                            for n in names:
                                if n in self.hidden:
                                    self.hidden[n] += 1
                if carries_rack:
                    with self.lock:
                        _, node_id, once, only = self.rack
                        skip = set(self.preferred) if once else set()
                    frame, rewritten = prefer_replica_answer(api_version, frame, node_id, skip, only)
                    with self.lock:
                        self.preferred += rewritten
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, kafkawire.WireError):
            pass
        self._shut(client, upstream)


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


def hide_topics(version, frame, hidden):
    """A Metadata response (v1-v12) with the error code of every topic named
    in `hidden` set to UNKNOWN_TOPIC_OR_PARTITION (3), in place; and the
    names patched."""
    assert 1 <= version <= 12, f"Metadata v{version} not handled by the relay"
    flexible = version >= 9
    r = kafkawire.Reader(frame)
    r.int32()  # correlation id
    _skip_tags(r, flexible)
    if version >= 3:
        r.int32()  # throttle
    for _ in range(_array_len(r, flexible)):
        r.int32()
        _skip_string(r, flexible)
        r.int32()
        _skip_string(r, flexible)  # rack
        _skip_tags(r, flexible)
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
