"""SASL toward clients: the proxy as SASL server (issue 10).

The proxy listens with SASL_PLAINTEXT; the broker (Tansu) is plaintext.
Real clients log in with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 and
produce and consume on a remapped topic and on a 1:1 topic. Refusals are
checked as Kafka's SaslServerAuthenticator gives them: SASL_AUTHENTICATION_FAILED
(58) with Kafka's message, the connection closed after the answer, a
request before authenticating closing the connection, repeated failures
answered later (Kafka: connection.failed.authentication.delay.ms), and
KIP-368 session lifetimes.
"""

from collections import Counter
import time

import pytest
from confluent_kafka import Producer

import clients
import harness
import kafkawire
import virtual

USERS = {"alice": "alice-Pw-7e1c0d", "bob": "${KPR_E2E_BOB_PASSWORD}"}
BOB_PASSWORD = "bob-Pw-93af52"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
CLIENTS = ["confluent-kafka", "kafka-python", "kcat", "kafkajs"]
V, P = 4, 2
PER_PARTITION = 5


@pytest.fixture
def sasl_proxy(start_proxy, monkeypatch):
    """start_proxy(...) with SASL_PLAINTEXT toward clients and the users above
    (bob's password through ${VAR}, as the guide's example); extra_listen:
    more listen settings."""
    monkeypatch.setenv("KPR_E2E_BOB_PASSWORD", BOB_PASSWORD)

    def start(lifetime_ms=None, extra_listen=None, **kw):
        sasl = {"enabled_mechanisms": MECHANISMS, "credentials": {"users": dict(USERS)}}
        if lifetime_ms is not None:
            sasl["session_lifetime_ms"] = lifetime_ms
        extra = {"listen": {"security": {"protocol": "SASL_PLAINTEXT", "sasl": sasl}, **(extra_listen or {})}}
        return start_proxy(mapping=virtual.mapping(V, P, {"one-.*": (3, 3)}), extra=extra, **kw)

    return start


def confluent_sasl(mechanism, user="alice", password=USERS["alice"]):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password}


def kafka_python_sasl(mechanism, user="alice", password=USERS["alice"]):
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": user, "sasl_plain_password": password}


def produce_and_consume(client, mechanism, address, topic, partitions):
    """Produce PER_PARTITION records to each partition through the proxy and
    read them back with the same client and mechanism."""
    tag = f"{client}-{mechanism}"
    records = clients.make_records(range(partitions), partitions * PER_PARTITION, tag=tag)
    if client == "confluent-kafka":
        conf = confluent_sasl(mechanism)
        clients.produce_confluent(address, topic, records, **conf)
        consumed = clients.consume_confluent(address, topic, range(partitions), len(records), **conf)
    elif client == "kafka-python":
        conf = kafka_python_sasl(mechanism)
        clients.produce_kafka_python_headers(address, topic, [(p, k, v, None) for p, k, v in records],
                                             **conf)
        consumed = clients.consume_kafka_python(address, topic, range(partitions), len(records), **conf)
    elif client == "kcat":
        records, consumed = kcat_produce_and_consume(mechanism, address, topic, partitions, tag)
    else:
        records, consumed = kafkajs_produce_and_consume(mechanism, address, topic, partitions)
    clients.check_records(records, consumed)


def kcat_args(mechanism, user="alice", password=USERS["alice"]):
    return ["-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanism={mechanism}",
            "-X", f"sasl.username={user}", "-X", f"sasl.password={password}"]


def kcat_produce_and_consume(mechanism, address, topic, partitions, tag):
    records, consumed = [], []
    for p in range(partitions):
        lines = [f"{p}:{i}:{tag}" for i in range(PER_PARTITION)]
        clients.kcat(address, *kcat_args(mechanism), "-P", "-t", topic, "-p", p,
                     input=("\n".join(lines) + "\n").encode())
        records += [(p, None, line.encode()) for line in lines]
    for p in range(partitions):
        out = clients.kcat(address, *kcat_args(mechanism), "-C", "-t", topic, "-p", p,
                           "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n")
        for line in out.decode().splitlines():
            part, off, value = line.split(" ", 2)
            consumed.append((int(part), int(off), None, value.encode()))
    return records, consumed


def kafkajs_produce_and_consume(mechanism, address, topic, partitions):
    sasl = {"mechanism": mechanism.lower(), "username": "alice", "password": USERS["alice"]}
    return clients.kafkajs_smoke(address, topic, partitions, PER_PARTITION, sasl)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_client_produces_and_consumes_after_authenticating(broker, sasl_proxy, client, mechanism):
    proxy = sasl_proxy()
    remapped = f"vt-{client}-{mechanism}".lower()
    one_to_one = f"one-{client}-{mechanism}".lower()
    clients.create_topic(broker.address, remapped, P)
    clients.create_topic(broker.address, one_to_one, 3)
    produce_and_consume(client, mechanism, proxy.address, remapped, V)
    produce_and_consume(client, mechanism, proxy.address, one_to_one, 3)
    # The broker holds what was produced: V * PER_PARTITION records on P
    # physical partitions, and the 1:1 topic's as they were sent.
    high = clients.high_watermarks(broker.address, remapped, range(P))
    assert sum(high.values()) == V * PER_PARTITION, high
    assert clients.high_watermarks(broker.address, one_to_one, range(3)) == {
        p: PER_PARTITION for p in range(3)}


def authenticate_raw(address, user, password):
    """A fresh connection logged in with PLAIN; returns (socket, answer)."""
    sock = kafkawire.connect(address)
    kafkawire.api_versions(sock, 1, 1)
    return sock, kafkawire.sasl_plain(sock, user, password)


def failed_delivery(address, topic, conf):
    """Try to produce one record with confluent-kafka; returns the errors
    its error callback saw once one says authentication failed (or after
    10 s)."""
    errors = []
    producer = Producer(clients.confluent_conf(address, **conf, **{
        "error_cb": lambda e: errors.append(str(e)), "message.timeout.ms": 3000}))
    producer.produce(topic, b"must-not-arrive", partition=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("Authentication failed" in e for e in errors):
        producer.poll(0.2)
    producer.purge()
    producer.flush(5)
    return errors


def test_wrong_password_and_unknown_user_are_refused(broker, sasl_proxy):
    proxy = sasl_proxy(metrics=True)
    name = "one-refused"
    clients.create_topic(broker.address, name, 3)
    # A client that logged in before keeps being served throughout.
    good, answer = authenticate_raw(proxy.address, "alice", USERS["alice"])
    assert answer[1] == 0, answer

    for user, password in (("alice", "wrong"), ("mallory", "whatever")):
        sock, (_, error, message, _, _) = authenticate_raw(proxy.address, user, password)
        assert error == kafkawire.SASL_AUTHENTICATION_FAILED, (error, message)
        assert message == ("Authentication failed during authentication due to invalid "
                           "credentials with SASL mechanism PLAIN"), message
        assert kafkawire.wait_closed(sock, 10), "connection left open after a failed login"
        sock.close()
        _, _, topics = kafkawire.metadata_v1(good, [name], correlation_id=30)
        assert name in topics, topics

    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        for user, password in (("alice", "wrong"), ("mallory", "whatever")):
            errors = failed_delivery(proxy.address, name, confluent_sasl(mechanism, user, password))
            assert any("Authentication failed during authentication due to invalid credentials "
                       f"with SASL mechanism {mechanism}" in e for e in errors), errors

    # Nothing reached the broker.
    assert clients.high_watermarks(broker.address, name, range(3)) == {0: 0, 1: 0, 2: 0}
    values = proxy.metrics()
    assert values.get('kafka_proxy_authentication_failures_total{mechanism="PLAIN"}') == 2, values
    assert values.get('kafka_proxy_authentication_failures_total{mechanism="SCRAM-SHA-256"}', 0) >= 2
    assert values.get('kafka_proxy_authentication_failures_total{mechanism="SCRAM-SHA-512"}', 0) >= 2
    log = proxy.log_since(0)
    assert "mallory" in log and "WARN" in log, log[-3000:]
    good.close()


@pytest.mark.parametrize("api", ["metadata", "produce"])
def test_request_before_authenticating_closes_the_connection(sasl_proxy, api):
    proxy = sasl_proxy()
    mark = proxy.log_mark()
    sock = kafkawire.connect(proxy.address)
    error, keys = kafkawire.api_versions(sock, 1, 1)
    assert error == 0
    assert keys[kafkawire.API_SASL_HANDSHAKE] == (0, 1), keys
    assert keys[kafkawire.API_SASL_AUTHENTICATE] == (0, 2), keys
    peer = "%s:%d" % sock.getsockname()
    if api == "metadata":
        sock.sendall(kafkawire.metadata_v1_request(2))
        want = "METADATA"
    else:
        sock.sendall(kafkawire.produce_request(2, {"one-x": {0: kafkawire.record_batch([(None, b"v", [])])}}))
        want = "PRODUCE"
    assert kafkawire.wait_closed(sock, 10), "request before authenticating was not refused"
    sock.close()
    line = proxy.wait_for_log(f"Unexpected Kafka request of type {want} during SASL handshake", mark)
    assert peer in line, line


def test_handshake_v0_takes_raw_tokens(sasl_proxy):
    """KIP-152: after SaslHandshake v0 the tokens are bare size-prefixed
    frames, not SaslAuthenticate requests."""
    proxy = sasl_proxy()
    sock = kafkawire.connect(proxy.address)
    _, error, mechanisms = kafkawire.parse_sasl_handshake_response(
        kafkawire.round_trip(sock, kafkawire.sasl_handshake_request(1, "PLAIN", version=0)))
    assert error == 0 and set(mechanisms) == set(MECHANISMS), (error, mechanisms)
    token = b"\0alice\0" + USERS["alice"].encode()
    sock.sendall(len(token).to_bytes(4, "big") + token)
    assert kafkawire.read_frame(sock) == b"", "a raw PLAIN success is an empty frame"
    kafkawire.metadata_v1(sock, [], correlation_id=3)
    sock.close()


def test_unsupported_mechanism_is_answered_with_the_enabled_ones(sasl_proxy):
    proxy = sasl_proxy()
    sock = kafkawire.connect(proxy.address)
    _, error, mechanisms = kafkawire.parse_sasl_handshake_response(
        kafkawire.round_trip(sock, kafkawire.sasl_handshake_request(1, "GSSAPI")))
    assert error == kafkawire.UNSUPPORTED_SASL_MECHANISM
    assert mechanisms == MECHANISMS
    sock.close()


def test_repeated_failures_are_answered_later(sasl_proxy):
    proxy = sasl_proxy()
    took = []
    for _ in range(5):
        start = time.monotonic()
        sock, (_, error, _, _, _) = authenticate_raw(proxy.address, "alice", "wrong")
        took.append(time.monotonic() - start)
        assert error == kafkawire.SASL_AUTHENTICATION_FAILED
        sock.close()
    assert took[4] > took[0], took
    assert took[4] > took[1], took
    # A correct password still gets in, at once.
    sock, answer = authenticate_raw(proxy.address, "alice", USERS["alice"])
    assert answer[1] == 0
    sock.close()


def test_session_lifetime(sasl_proxy):
    """KIP-368: past the lifetime a request other than a re-authentication
    closes the connection (Kafka: SocketServer's expired-session check); a
    client that re-authenticates goes on."""
    lifetime_ms = 1500
    proxy = sasl_proxy(lifetime_ms=lifetime_ms)
    stale, answer = authenticate_raw(proxy.address, "alice", USERS["alice"])
    assert answer[1] == 0 and answer[4] == lifetime_ms, answer
    fresh, answer = authenticate_raw(proxy.address, "bob", BOB_PASSWORD)
    assert answer[1] == 0 and answer[4] == lifetime_ms, answer
    kafkawire.metadata_v1(stale, [], correlation_id=20)

    deadline = time.monotonic() + 2.5 * lifetime_ms / 1000
    corr = 40
    while time.monotonic() < deadline:
        time.sleep(lifetime_ms / 3000)
        answer = kafkawire.sasl_plain(fresh, "bob", BOB_PASSWORD, correlation_id=corr)
        assert answer[1] == 0, answer
        kafkawire.metadata_v1(fresh, [], correlation_id=corr + 2)
        corr += 3
    stale.sendall(kafkawire.metadata_v1_request(21))
    assert kafkawire.wait_closed(stale, 10), "a connection past its session lifetime was served"
    stale.close()
    fresh.close()


def test_trace_log_holds_no_password(broker, sasl_proxy):
    proxy = sasl_proxy(log_level="trace")
    name = "one-trace"
    clients.create_topic(broker.address, name, 3)
    sock, answer = authenticate_raw(proxy.address, "alice", USERS["alice"])
    assert answer[1] == 0
    sock.close()
    sock, answer = authenticate_raw(proxy.address, "bob", "not-" + BOB_PASSWORD)
    sock.close()
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        clients.produce_confluent(proxy.address, name, [(0, b"k", b"v")],
                                  **confluent_sasl(mechanism, "bob", BOB_PASSWORD))
    log = proxy.log_since(0)
    assert "TRACE" in log, "the proxy did not log at trace level"
    for secret in (USERS["alice"], BOB_PASSWORD, "not-" + BOB_PASSWORD):
        for shown in (secret, secret.encode().hex(), repr(secret.encode())[2:-1]):
            assert shown not in log, f"password shown in the trace log as {shown!r}"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_a_real_client_re_authenticates_within_the_lifetime(broker, sasl_proxy, mechanism):
    """librdkafka reads session_lifetime_ms (KIP-368) and logs in again on
    the same connection before it ends: a producer running past several
    lifetimes is never cut off."""
    lifetime_ms = 1500
    proxy = sasl_proxy(lifetime_ms=lifetime_ms, log_level="debug")
    name = f"one-reauth-{mechanism.lower()}"
    clients.create_topic(broker.address, name, 3)
    mark = proxy.log_mark()
    errors = []
    producer = Producer(clients.confluent_conf(proxy.address, **confluent_sasl(mechanism), **{
        "error_cb": lambda e: errors.append(str(e))}))
    delivered = []
    deadline = time.monotonic() + 3.5 * lifetime_ms / 1000
    i = 0
    while time.monotonic() < deadline:
        producer.produce(name, f"r{i}".encode(), partition=0,
                         on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0.25)
        i += 1
    producer.flush(10)
    assert delivered and all(err is None for err in delivered), delivered
    assert len(delivered) == i
    assert not errors, errors
    assert not virtual.log_lines(proxy, "expired|Closing connection", mark), proxy.log_since(mark)
    logins = Counter(line.split("Client ", 1)[1].split(" ", 1)[0]
                     for line in virtual.log_lines(proxy, "authenticated as alice", mark))
    assert max(logins.values()) >= 2, f"no connection re-authenticated: {logins}"
