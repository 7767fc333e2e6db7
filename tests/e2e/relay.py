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
- answer_requests(hook): hook(api_key, api_version, correlation_id, frame)
  sees every request before it is forwarded (frame without size prefix);
  bytes it returns go back as the answer instead, and the request never
  reaches the broker: a stand-in for an API Tansu lacks (OffsetDelete). It
  waits for the connection's earlier requests to be answered first, which
  is enough for one client's sequential requests, not for a pipelining one.
"""

import socket
import struct
import threading
import time

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
        self.request_hook = None
        self.requests = {}       # api_key -> count forwarded
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

    def answer_requests(self, hook):
        self.request_hook = hook

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
                hook = self.request_hook
                answer = hook(api_key, api_version, corr, frame) if hook else None
                if answer is not None:
                    while inflight:  # answers go back in request order
                        time.sleep(0.001)
                    client.sendall(struct.pack(">i", len(answer)) + answer)
                    continue
                inflight[corr] = (api_key, api_version)
                with self.lock:
                    self.requests[api_key] = self.requests.get(api_key, 0) + 1
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
                api_key, api_version = inflight.pop(corr, (None, None))
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
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, kafkawire.WireError):
            pass
        self._shut(client, upstream)
