"""A broker that misbehaves costs only the clients it served (issue 11).

One proxy, one real Tansu behind a relay (relay.py) that misbehaves only
for Produce requests naming one topic ("bad"): garbage bytes, a wrong
correlation id, an oversize size prefix, an answer cut short, no answer at
all, a TLS alert, or a real HTTP server answering instead. For each:

- the proxy logs one line naming the broker (node id and host:port) and
  what was wrong, in words (never "os error 11" or "response size
  1213486160");
- the client whose request met it sees its connection closed within the
  deadline (a broker that fails makes clients see a disconnect, as
  Kafka's NetworkClient disconnects on a request timeout);
- a second client, connected through the same proxy to the same broker,
  producing to a healthy topic, keeps working meanwhile and after;
- once the relay behaves again, the first client reconnects through the
  same proxy and its produce succeeds. New connections to a broker that
  just failed wait out a reconnect backoff (Kafka's reconnect.backoff.ms,
  50 ms doubling to reconnect.backoff.max.ms, 1 s): until then the proxy
  closes them, and the client retries, as a Kafka client would.

The proxy's own blocking connections (bootstrap, --check-config) name the
same faults: an HTTP server, a listener that never answers, a TLS server.
"""

import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness
import kafkawire
import tls_certs

REQUEST_TIMEOUT_MS = 3000

HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request")

# What the proxy must say after "broker N (127.0.0.1:PORT) ".
EXPECTED = {
    "garbage": r"sent bytes that are not a Kafka response: got de ad be ef 80 81 82 83 "
               r"where a response size was expected",
    "wrong_correlation": r"answered correlation id (\d+), expected (\d+) \(Produce\)",
    "oversize": r"sent a 1\.2 GiB response frame \(limit 1 GiB\)",
    "truncate": r"closed the connection mid-response \(got \d+ of \d+ bytes\)",
    "silent": r"did not answer Produce within kafka\.request_timeout_ms "
              rf"\({REQUEST_TIMEOUT_MS} ms\)",
    "tls_alert": r"is not a Kafka broker: got a TLS record \(15 03 03 00\) where a response "
                 r"size was expected: is kafka\.security_protocol SSL\?",
    "http": r"is not a Kafka broker: got 'HTTP/1\.1 400 Bad Request' where a response "
            r"size was expected",
}


class OneShotServer:
    """A server on 127.0.0.1 that answers each connection with `answer`
    after its first bytes, then closes it: an HTTP server given bytes it
    cannot parse (answer None: a listener that never answers)."""

    def __init__(self, answer):
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.recv(65536)
            if self.answer is None:
                return  # kept open, silent, until close()
            conn.sendall(self.answer)
            conn.close()
        except OSError:
            pass

    def close(self):
        self.closed = True
        for s in [self.listener] + self.conns:
            try:
                s.close()
            except OSError:
                pass


def produce(address, name, value, corr=7, timeout=10.0):
    """A Produce v3 (acks=1) of one record to partition 0 on a fresh raw
    connection -> (socket, the partition's answer or None if the proxy
    closed the connection)."""
    s = kafkawire.connect(address, timeout=timeout)
    batch = kafkawire.record_batch([(None, value.encode(), [])])
    s.sendall(kafkawire.produce_request(corr, {name: {0: batch}}, version=3, acks=1,
                                        timeout_ms=1000))
    return s


def produce_ok(address, name, value):
    with produce(address, name, value) as s:
        produced_on(s, name, 7)


def produced_on(s, name, corr):
    payload = kafkawire.read_frame(s)
    assert payload is not None, f"the proxy closed a healthy produce to {name}"
    got, result = kafkawire.parse_produce_response(3, payload)
    assert got == corr
    assert result[(name, 0)]["error"] == 0, result


def produce_on(s, name, value, corr):
    """Produce one record on an open connection and check its answer."""
    batch = kafkawire.record_batch([(None, value.encode(), [])])
    s.sendall(kafkawire.produce_request(corr, {name: {0: batch}}, version=3, acks=1,
                                        timeout_ms=1000))
    produced_on(s, name, corr)


def produce_retrying(address, name, value, within=5.0):
    """produce_ok, on a new connection each time the proxy closes one (a
    broker in reconnect backoff), for `within` seconds -> attempts made."""
    deadline = time.monotonic() + within
    attempts = 0
    while True:
        attempts += 1
        try:
            produce_ok(address, name, value)
            return attempts
        except (AssertionError, OSError, kafkawire.WireError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def node_of(upstream_address, relay_port):
    """The node id the broker gives itself (advertised at the relay)."""
    with kafkawire.connect(upstream_address) as s:
        brokers, _, _ = kafkawire.metadata_v1(s, None, correlation_id=3)
    ids = [node for node, _, port, _ in brokers if port == relay_port]
    assert ids, brokers
    return ids[0]


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_a_misbehaving_broker_costs_only_its_clients(broker_behind_relay, start_proxy, mode):
    upstream, relay = broker_behind_relay
    bad, good = f"bad-{mode}", f"good-{mode}"
    for name in (bad, good):
        upstream.create_topic_cli(name, 1)
    proxy = start_proxy(upstream=relay.address,
                        extra={"kafka": {"request_timeout_ms": REQUEST_TIMEOUT_MS}})
    produce_ok(proxy.address, bad, "before")
    bystander = kafkawire.connect(proxy.address, timeout=10)
    produce_on(bystander, good, "before", 1)

    peer = None
    if mode == "http":
        peer = OneShotServer(HTTP_ANSWER)
        relay.misbehave(("divert", peer.port), bad.encode())
    else:
        relay.misbehave(mode, bad.encode())
    mark = proxy.log_mark()
    try:
        start = time.monotonic()
        victim = produce(proxy.address, bad, "during", timeout=30)
        # Meanwhile another client of the same proxy and broker is served.
        produce_on(bystander, good, "meanwhile", 2)
        deadline = REQUEST_TIMEOUT_MS / 1000 + 1 + 5  # + produce timeout + slack
        closed = kafkawire.wait_closed(victim, deadline)
        took = time.monotonic() - start
        victim.close()
        assert relay.misbehaviours(), "the relay never misbehaved"
        assert closed, f"{mode}: the client's connection stayed open {deadline} s"
        print(f"{mode}: client connection closed after {took:.2f} s")

        line = proxy.wait_for_log(EXPECTED[mode], since=mark, timeout=10)
        node = node_of(upstream.address, relay.port)
        named = rf"broker {node} \(127\.0\.0\.1:{relay.port}\) "
        assert re.search(named + EXPECTED[mode], line), f"broker not named as /{named}/: {line}"
        text = proxy.log_since(mark)
        assert "os error" not in text and "response size 1" not in text, text
        assert len(re.findall(EXPECTED[mode], text)) == 1, f"one line per fault:\n{text}"
        print(line)
        if mode == "wrong_correlation":
            got, want = map(int, re.search(EXPECTED[mode], line).groups())
            assert got == want + 5, line

        # The relay behaves again: the same client comes back and is served.
        attempts = produce_retrying(proxy.address, bad, "after")
        print(f"{mode}: served again after {attempts} connection(s)")
        produce_on(bystander, good, "after", 3)
        assert time.monotonic() - start < deadline + 15
    finally:
        bystander.close()
        if peer:
            peer.close()


# ------------------------------------------------ the proxy's own connections

def check_config(tmp_path, bootstrap, timeout=60):
    config = harness.proxy_config(bootstrap, harness.free_port(),
                                  extra={"kafka": {"request_timeout_ms": REQUEST_TIMEOUT_MS,
                                                   "connection_timeout_ms": 2000}})
    path = tmp_path / "check.yaml"
    path.write_text(harness.to_yaml(config) + "\n")
    return subprocess.run([harness.PROXY_BIN, "--config", path, "--check-config"],
                          capture_output=True, text=True, timeout=timeout)


class TlsServer(OneShotServer):
    """A TLS server on 127.0.0.1 (OpenSSL, via Python's ssl): it resets a
    connection whose first bytes are not a TLS handshake."""

    def __init__(self, certs):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certs.server, certs.server_key)
        super().__init__(b"")

    def _one(self, conn):
        try:
            self.context.wrap_socket(conn, server_side=True).close()
        except (OSError, ssl.SSLError):
            conn.close()


@pytest.mark.parametrize("peer", ["http", "silent", "tls"])
def test_check_config_names_a_peer_that_is_not_kafka(tmp_path, peer):
    if peer == "tls":
        certs = tls_certs.make_certs(tmp_path)
        server = TlsServer(certs)
    else:
        server = OneShotServer(HTTP_ANSWER if peer == "http" else None)
    try:
        start = time.monotonic()
        run = check_config(tmp_path, f"127.0.0.1:{server.port}")
        took = time.monotonic() - start
    finally:
        server.close()
    out = run.stdout + run.stderr
    print(f"{peer}: exit {run.returncode} after {took:.1f} s\n{out}")
    assert run.returncode == 4, out
    assert "os error" not in out and "response size 1" not in out, out
    broker = rf"broker 127\.0\.0\.1:{server.port} "
    expected = {
        "http": broker + r"is not a Kafka broker: got 'HTTP/1\.1 400 Bad Request' "
                         r"where a response size was expected",
        "silent": broker + rf"did not answer ApiVersions within kafka\.request_timeout_ms "
                           rf"\({REQUEST_TIMEOUT_MS} ms\)",
        "tls": broker + r"closed the connection without answering ApiVersions "
                        r"\(is kafka\.security_protocol right\? a TLS or SASL listener "
                        r"closes on plaintext requests\)",
    }[peer]
    assert re.search(expected, out), f"/{expected}/ not in:\n{out}"
    assert took < REQUEST_TIMEOUT_MS / 1000 * 3 + 10, took
