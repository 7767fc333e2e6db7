"""A TCP relay between the proxy and the broker that can misbehave on cue.

The broker_behind_relay fixture (conftest.py) starts a broker advertising
the relay's port, with the relay in front; point the proxy at the relay
(start_proxy(upstream=relay.address)): every upstream connection of the
proxy then goes through it. The relay reads the Kafka frames going each
way, remembers each request's API key and version by correlation id, and
can:

- lose_next_response(api_key): forward the request, let the broker act on
  it, then close both sides instead of forwarding its response, as when a
  connection dies after the broker wrote a batch and before the client heard
  of it. The client (through the proxy) must retry; the broker's idempotence
  must drop the duplicate.
- hold_responses() / stop_holding(): keep the broker's
  answers from the proxy for a while (the broker acted on the requests),
  then drop them: a window in which the test kills the proxy or moves the
  client to another instance, so that the client retries elsewhere.
- lose_next_matching(api_keys, containing): the same, for the next request
  of those APIs whose bytes contain `containing` (e.g. a derived group's
  name).
- answer_error(api_keys, code, containing, count): the next `count`
  requests of those APIs whose bytes contain `containing` reach the broker
  with that name changed in its last byte (so the broker acts on a decoy,
  not the real group), and their answer comes back with every error code
  set to `code` (OffsetCommit, OffsetFetch), as from a coordinator that is
  loading or has moved.
- answer_produce_error(code, containing, count): the next `count` Produce
  requests (v3-v8) whose bytes contain `containing` reach the broker
  unchanged, and their answer comes back with every partition's error
  code set to `code`, e.g. MESSAGE_TOO_LARGE where Tansu does not enforce
  a topic's max.message.bytes.
- stale_coordinator(api_keys, containing): like answer_error with
  NOT_COORDINATOR, for every such request until a FindCoordinator request
  naming `containing` passes: a coordinator that moved, as the node that
  lost it answers until the client asks where it went.
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
- answer_requests(hook): hook(api_key, api_version, correlation_id, frame)
  sees every request before it is forwarded (frame without size prefix);
  bytes it returns go back as the answer instead, and the request never
  reaches the broker: a stand-in for an API Tansu lacks (OffsetDelete). It
  waits for the connection's earlier requests to be answered first, which
  is enough for one client's sequential requests, not for a pipelining one.
- hold_requests(api_key, containing): requests of that API whose bytes
  contain `containing` wait in the relay, not sent to the broker, until the
  returned Hold is released (hold.seen is set when one arrives): an answer
  that does not come, e.g. a FindCoordinator the proxy must wait for. Later
  requests on that connection wait behind it, as behind a slow answer.
- extra_broker(node_id, port): every Metadata answer also lists broker
  node_id at 127.0.0.1:port, e.g. a listener that never accepts, so that a
  request routed to that broker makes the proxy connect there.
- misbehave(mode, containing, api_key=PRODUCE, count=1): the next `count`
  requests of that API whose bytes contain `containing` are answered as a
  broken broker or a peer that is not Kafka would answer (MISBEHAVIOURS):
  "garbage" (bytes that are no frame), "wrong_correlation" (the broker's
  answer with another correlation id), "oversize" (a 1.2 GB size prefix
  and a few bytes, the connection left open), "truncate" (the first half
  of the broker's answer, then the connection closed), "silent" (no
  answer, nothing more forwarded on that connection, left open),
  "tls_alert" (a TLS alert record, as a TLS listener may send to plaintext
  bytes, then closed) or ("divert", port): the request bytes go to the
  server on 127.0.0.1:port instead (e.g. an HTTP server) and whatever it
  answers comes back, until it closes. Other connections, and other
  requests, are relayed as before; misbehaviours() lists those done.
  Meant for one request in flight on the affected connection.
"""

import socket
import struct
import threading
import time

import kafkawire
from relay_frames import (  # noqa: F401  (tests reach these as relay.X)
    API_DELETE_GROUPS,
    add_brokers,
    encode_api_versions_response,
    fetch_carries_rack,
    hide_topics,
    prefer_replica_answer,
    set_error_codes,
    set_produce_error_codes)

NOT_COORDINATOR = 16

# A TLS alert record (fatal, protocol_version), as a TLS listener may answer
# bytes that are not a TLS handshake.
TLS_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])
# 0xdeadbeef as a size prefix is negative: no Kafka frame starts so.
GARBAGE = bytes.fromhex("deadbeef") + bytes(range(0x80, 0xa0))
# 1.2 GB announced, above the proxy's 1 GiB limit for a response frame.
OVERSIZE = 1_288_490_189
MISBEHAVIOURS = ("garbage", "wrong_correlation", "oversize", "truncate", "silent",
                 "tls_alert", "divert")

def _listen(port):
    """A listening socket on 127.0.0.1:port (0: a free port)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def _accepted_pairs(owner, target_port):
    """(client, upstream) for each connection accepted on owner.listener,
    upstream a new connection to 127.0.0.1:target_port(). A client whose
    upstream cannot be reached (or that has none: port None) is closed.
    Ends when the owner closes."""
    while not owner.closed:
        try:
            client, _ = owner.listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port()), timeout=10)
            upstream.settimeout(None)
        except (OSError, TypeError):
            client.close()
            continue
        yield client, upstream


class Hold:
    """Requests of one API containing some bytes, kept in the relay until
    release() (see Relay.hold_requests)."""

    def __init__(self, api_key, containing):
        self.api_key = api_key
        self.containing = containing
        self.seen = threading.Event()
        self.released = threading.Event()

    def catches(self, api_key, frame):
        return (api_key == self.api_key and self.containing in frame
                and not self.released.is_set())

    def wait(self):
        self.seen.set()
        self.released.wait()

    def release(self):
        self.released.set()


class Relay:
    def __init__(self, upstream_port, port=None):
        self.upstream_port = upstream_port
        self.listener = _listen(port or 0)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.lose = {}           # api_key -> responses still to lose
        self.lost = []           # (api_key, api_version, correlation_id) of lost responses
        self.extra_apis = {}
        self.holding = False     # every response held back while True
        self.held = []           # (api_key, api_version, correlation_id) held
        self.request_hook = None
        self.requests = {}       # api_key -> count forwarded
        self.faults = []         # [dict(api_keys, containing, code, left, until_found)]
        self.injected = []       # (api_key, api_version, code) of answers changed
        self.found = []          # FindCoordinator requests seen, as bytes
        self.hidden = {}         # topic name -> Metadata answers rewritten
        self.rack = None         # (rack id, node id, once, partitions) of prefer_replica
        self.preferred = []      # (topic, partition) answered with a preferred replica
        self.fetches_with_rack = 0
        self.holds = []          # Hold of hold_requests, released or not
        self.extra_brokers = {}  # node id -> port, added to Metadata answers
        self.misbehaviour = []   # [dict(mode, port, api_key, containing, left)]
        self.misbehaved = []     # (mode, api_key, correlation_id) done
        self.sockets = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def lose_next_response(self, api_key, count=1):
        with self.lock:
            self.lose[api_key] = self.lose.get(api_key, 0) + count

    def hold_responses(self):
        """Keep every broker response from the proxy (the broker has acted
        on the requests) until stop_holding(): a window in which to kill the
        proxy or move the client, as when a proxy dies after forwarding a
        batch and before its answer got back. All APIs, so that no later
        answer overtakes a held one on its connection."""
        with self.lock:
            self.holding = True

    def stop_holding(self):
        """Held responses are dropped, never delivered: their proxy or its
        client is gone by then."""
        with self.lock:
            self.holding = False

    def held_count(self):
        with self.lock:
            return len(self.held)

    def lose_next_matching(self, api_keys, containing, count=1):
        with self.lock:
            self.faults.append({"api_keys": tuple(api_keys), "containing": containing,
                                "code": None, "left": count, "until_found": False})

    def answer_error(self, api_keys, code, containing, count=1):
        with self.lock:
            self.faults.append({"api_keys": tuple(api_keys), "containing": containing,
                                "code": code, "left": count, "until_found": False})

    def answer_produce_error(self, code, containing, count=1):
        with self.lock:
            self.faults.append({"api_keys": (kafkawire.API_PRODUCE,), "containing": containing,
                                "code": code, "left": count, "until_found": False,
                                "rename": False})

    def stale_coordinator(self, api_keys, containing):
        with self.lock:
            self.faults.append({"api_keys": tuple(api_keys), "containing": containing,
                                "code": NOT_COORDINATOR, "left": None, "until_found": True})

    def find_coordinator_requests(self, containing):
        with self.lock:
            return sum(1 for f in self.found if containing in f)

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

    def answer_requests(self, hook):
        self.request_hook = hook

    def hold_requests(self, api_key, containing):
        hold = Hold(api_key, containing)
        with self.lock:
            self.holds.append(hold)
        return hold

    def extra_broker(self, node_id, port):
        with self.lock:
            self.extra_brokers[node_id] = port

    def misbehave(self, mode, containing, api_key=kafkawire.API_PRODUCE, count=1):
        """mode: one of MISBEHAVIOURS, or ("divert", port)."""
        mode, port = (mode if isinstance(mode, tuple) else (mode, None))
        assert mode in MISBEHAVIOURS, mode
        with self.lock:
            self.misbehaviour.append({"mode": mode, "port": port, "api_key": api_key,
                                      "containing": containing, "left": count})

    def misbehaviours(self):
        with self.lock:
            return list(self.misbehaved)

    def _take_misbehaviour(self, api_key, corr, frame):
        with self.lock:
            for m in self.misbehaviour:
                if m["api_key"] == api_key and m["containing"] in frame:
                    m["left"] -= 1
                    if m["left"] <= 0:
                        self.misbehaviour.remove(m)
                    self.misbehaved.append((m["mode"], api_key, corr))
                    return m
        return None

    def _misbehave_now(self, m, client, upstream, frame):
        """Answer `frame` as misbehaviour `m` says, instead of the broker.
        -> whether to stop relaying this connection (and how: "close" or
        "hang", kept open with nothing more forwarded)."""
        mode = m["mode"]
        if mode == "garbage":
            client.sendall(GARBAGE)
            return "hang"
        if mode == "oversize":
            client.sendall(struct.pack(">i", OVERSIZE) + b"\x00" * 64)
            return "hang"
        if mode == "silent":
            return "hang"
        if mode == "tls_alert":
            client.sendall(TLS_ALERT)
            return "close"
        if mode == "divert":
            with socket.create_connection(("127.0.0.1", m["port"]), timeout=10) as peer:
                peer.sendall(struct.pack(">i", len(frame)) + frame)
                _copy(peer, client)
            return "close"
        return None  # wrong_correlation, truncate: done to the broker's answer

    def pending_losses(self):
        with self.lock:
            return sum(self.lose.values())

    def close(self):
        self.closed = True
        with self.lock:
            holds = list(self.holds)
        for hold in holds:
            hold.release()
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
        for client, upstream in _accepted_pairs(self, lambda: self.upstream_port):
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

    def _take_fault(self, api_key, frame):
        """The fault this request triggers, if any (called with the lock)."""
        if api_key == kafkawire.API_FIND_COORDINATOR:
            self.found.append(frame)
            self.faults = [f for f in self.faults
                           if not (f["until_found"] and f["containing"] in frame)]
            return None
        for f in self.faults:
            if api_key in f["api_keys"] and f["containing"] in frame:
                if f["left"] is not None:
                    f["left"] -= 1
                    if f["left"] <= 0:
                        self.faults.remove(f)
                return f
        return None

    def _requests(self, client, upstream, inflight):
        try:
            while True:
                frame = self._read_frame(client)
                if frame is None:
                    break
                api_key, api_version, corr = struct.unpack(">hhi", frame[:8])
                hook = self.request_hook
                answer = hook(api_key, api_version, corr, frame) if hook else None
                if answer is not None:
                    while inflight:  # answers go back in request order
                        time.sleep(0.001)
                    client.sendall(struct.pack(">i", len(answer)) + answer)
                    continue
                bad = self._take_misbehaviour(api_key, corr, frame)
                stop = bad and self._misbehave_now(bad, client, upstream, frame)
                if stop == "hang":
                    # Read on and forward nothing: a broker that hangs.
                    while self._read_frame(client) is not None:
                        pass
                    break
                if stop == "close":
                    break
                with self.lock:
                    holds = [h for h in self.holds if h.catches(api_key, frame)]
                for hold in holds:
                    hold.wait()
                with self.lock:
                    self.requests[api_key] = self.requests.get(api_key, 0) + 1
                    fault = self._take_fault(api_key, frame)
                    rack = self.rack
                    carries_rack = (api_key == kafkawire.API_FETCH and rack is not None
                                    and fetch_carries_rack(api_version, frame, rack[0]))
                    if carries_rack:
                        self.fetches_with_rack += 1
                if fault is not None and fault["code"] is not None and fault.get("rename", True):
                    name = fault["containing"]
                    decoy = name[:-1] + (b"X" if name[-1:] != b"X" else b"Y")
                    frame = frame.replace(name, decoy)
                if bad is not None:
                    fault = dict(fault or {}, code=0, misbehave=bad["mode"])
                inflight[corr] = (api_key, api_version, fault, carries_rack)
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
                api_key, api_version, fault, carries_rack = inflight.pop(corr, (None, None, None, False))
                with self.lock:
                    if self.lose.get(api_key) or (fault is not None and fault["code"] is None):
                        if fault is None:
                            self.lose[api_key] -= 1
                        self.lost.append((api_key, api_version, corr))
                        break
                    if self.holding:
                        self.held.append((api_key, api_version, corr))
                        continue
                bad = fault.get("misbehave") if fault is not None else None
                if bad == "wrong_correlation":
                    client.sendall(struct.pack(">ii", len(frame), corr + 5) + frame[4:])
                    continue
                if bad == "truncate":
                    client.sendall(struct.pack(">i", len(frame)) + frame[:len(frame) // 2])
                    break
                if fault is not None:
                    frame = set_error_codes(api_key, api_version, frame, fault["code"])
                    with self.lock:
                        self.injected.append((api_key, api_version, fault["code"]))
                if api_key == kafkawire.API_API_VERSIONS and self.extra_apis:
                    _, error, keys = kafkawire.parse_api_versions_response(api_version, frame)
                    if error == 0:
                        keys.update(self.extra_apis)
                        frame = encode_api_versions_response(api_version, corr, error, keys)
                if api_key == kafkawire.API_METADATA:
                    with self.lock:
                        hidden = dict(self.hidden)
                        extra_brokers = dict(self.extra_brokers)
                    if extra_brokers:
                        frame = add_brokers(api_version, frame, extra_brokers)
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


class Switch:
    """One address in front of several kpr-proxy instances, as a load
    balancer would be: each new client connection goes to the current
    target; switch_to(port) moves new connections to another instance and
    cuts the ones open now, requests in flight included, so that the
    client reconnects and retries through the other instance."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = _listen(0)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []
        self.connections = 0   # client connections accepted
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="switch-accept").start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def switch_to(self, port):
        with self.lock:
            self.target_port = port
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            Relay._shut(*pair)

    def close(self):
        self.closed = True
        Relay._shut(self.listener)
        self.switch_to(None)

    def _target_port(self):
        with self.lock:
            return self.target_port

    def _accept(self):
        for client, upstream in _accepted_pairs(self, self._target_port):
            with self.lock:
                self.pairs.append((client, upstream))
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        _copy(src, dst)
        Relay._shut(src, dst)


def _copy(src, dst):
    """Bytes from src to dst until src closes (or either fails)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass

