"""Minimal Kafka wire protocol for tests that talk to sockets directly.

Only what the raw-socket tests need, written from Apache Kafka's message
schemas: request framing (header v1 and v2), ApiVersions v0-v3 and
Metadata v1 requests and their responses. Standard library only, so
scripts/start-broker can use it as a readiness probe before any Kafka client
is installed:

    python3 tests/e2e/kafkawire.py probe 127.0.0.1:19092 [--timeout SECONDS]
"""

import socket
import struct
import sys
import time

API_METADATA = 3
API_API_VERSIONS = 18


class WireError(Exception):
    pass


# ---------------------------------------------------------------- encoding

def _string(s):
    """Kafka STRING / NULLABLE_STRING: int16 length then UTF-8 bytes."""
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _uvarint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


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
