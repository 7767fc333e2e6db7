"""The proxy as a SASL client of the cluster (kafka.security_protocol
SASL_PLAINTEXT, kafka.sasl): Tansu started with --authentication and SCRAM
users (secured_tansu.py). Clients talk plaintext to the proxy; every
connection the proxy opens to the broker authenticates first, its own
look-ups (metadata, the producer-id topic) included.

Tansu verifies SCRAM proofs and proves itself (server signature). PLAIN is
no proof with Tansu (said not to verify passwords; Tansu 0.6 here closes the
connection on a SaslHandshake naming PLAIN), so PLAIN is exercised only
against a login the relay plays (the KIP-368 test).
"""

import struct
import subprocess
import time
import uuid

import pytest

import clients
import harness
import kafkawire
import virtual
from relay import Relay
from secured_tansu import SecuredTansu

V, P = 20, 4
USERS = [("SCRAM-SHA-256", "proxy256", "pw-256-secret"),
         ("SCRAM-SHA-512", "proxy512", "pw-512-secret")]
RUN = uuid.uuid4().hex[:6]
# Per mechanism: a remapped topic (4 partitions) and a 1:1 one (3).
TOPICS = {m: (f"sasl-remapped-{m}-{RUN}", f"sasl-plain-{m}-{RUN}") for m, _, _ in USERS}


@pytest.fixture(scope="module")
def secured(module_run_dir):
    topics = [(t, n) for remapped, plain in TOPICS.values() for t, n in ((remapped, P), (plain, 3))]
    b = SecuredTansu(module_run_dir, USERS, topics=topics)
    try:
        b.start()
        yield b
    finally:
        b.stop()


def sasl_extra(mechanism, user, password):
    return {"kafka": {"security_protocol": "SASL_PLAINTEXT",
                      "sasl": {"mechanism": mechanism, "username": user, "password": password}}}


def mapping():
    # 20 over 4: REMAPPED (4 partitions) is remapped, ONE_TO_ONE (3) is not.
    return virtual.mapping(V, P)


def write_config(tmp_path, secured, extra, name="check"):
    config = harness.proxy_config(secured.address, harness.free_port(), mapping=mapping(), extra=extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(harness.to_yaml(config) + "\n")
    return path


def check_config(path):
    return subprocess.run([harness.PROXY_BIN, "--check-config", "--config", path],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mechanism,user,password", USERS, ids=["sha256", "sha512"])
def test_produce_and_consume_through_an_authenticated_proxy(secured, start_proxy, mechanism, user, password):
    proxy = start_proxy(upstream=secured, mapping=mapping(), extra=sasl_extra(mechanism, user, password))
    remapped, one_to_one = TOPICS[mechanism]
    # Remapped topic, idempotent: derived producer ids come from the
    # cluster and go to the producer-id topic, through the proxy's own
    # (authenticated) control connections.
    records = clients.make_records(range(V), 400, tag=f"r-{mechanism}")
    clients.produce_confluent(proxy.address, remapped, records, **{"enable.idempotence": True})
    consumed = clients.consume_confluent(proxy.address, remapped, range(V), len(records))
    clients.check_records(records, consumed)
    # A 1:1 topic passes through on authenticated connections too.
    plain = clients.make_records(range(3), 300, tag=f"p-{mechanism}")
    clients.produce_confluent(proxy.address, one_to_one, plain)
    consumed = clients.consume_confluent(proxy.address, one_to_one, range(3), len(plain))
    clients.check_records(plain, consumed)
    log = proxy.process.log_text()
    assert "SASL authentication failed" not in log


def test_kcat_through_an_authenticated_proxy(secured, start_proxy):
    mechanism, user, password = USERS[0]
    proxy = start_proxy(upstream=secured, mapping=mapping(), extra=sasl_extra(mechanism, user, password))
    one_to_one = TOPICS[mechanism][1]
    lines = [f"kcat-{i}" for i in range(50)]
    clients.kcat(proxy.address, "-P", "-t", one_to_one, "-p", 1, input=("\n".join(lines) + "\n").encode())
    out = clients.kcat(proxy.address, "-C", "-t", one_to_one, "-p", 1, "-o", "beginning", "-e", "-q", "-f", "%s\n")
    assert [l for l in out.decode().splitlines() if l.startswith("kcat-")] == lines


def test_wrong_password_is_named_at_start_and_by_check_config(secured, tmp_path):
    mechanism, user, _ = USERS[0]
    extra = sasl_extra(mechanism, user, "not-the-password")
    path = write_config(tmp_path, secured, extra)
    # Start: refused, exit 4 (the cluster refused us), the message says so
    # and names the broker.
    run = subprocess.run([harness.PROXY_BIN, "--config", path], capture_output=True, text=True, timeout=60)
    assert run.returncode == 4, run.stderr
    assert "SASL authentication failed" in run.stderr
    assert secured.address in run.stderr
    assert "not-the-password" not in run.stderr + run.stdout
    # --check-config: non-zero, names the credentials step.
    out = check_config(path)
    assert out.returncode != 0, out.stdout
    assert "SASL credentials failed" in out.stderr and "SASL authentication failed" in out.stderr, out.stderr
    assert "not-the-password" not in out.stderr + out.stdout


def handshake_refusal(offered):
    """A relay hook answering SaslHandshake as Kafka does for a mechanism it
    has not enabled (SaslServerAuthenticator.handleHandshakeRequest):
    UNSUPPORTED_SASL_MECHANISM (33) and the enabled mechanisms. Tansu 0.6
    closes the connection instead, naming nothing."""
    def hook(api_key, api_version, corr, frame):
        if api_key != 17:
            return None
        body = struct.pack(">ihi", corr, 33, len(offered))
        return body + b"".join(kafkawire._string(m) for m in offered)
    return hook


def test_mechanism_the_broker_does_not_offer_is_named_with_those_it_offers(secured, tmp_path):
    relay = Relay(secured.port)
    try:
        relay.answer_requests(handshake_refusal(["SCRAM-SHA-256", "OAUTHBEARER"]))
        config = harness.proxy_config(relay.address, harness.free_port(),
                                      extra=sasl_extra("SCRAM-SHA-512", USERS[1][1], USERS[1][2]))
        path = tmp_path / "mechanism.yaml"
        path.write_text(harness.to_yaml(config) + "\n")
        out = check_config(path)
    finally:
        relay.close()
    assert out.returncode == 4, out.stdout + out.stderr
    assert "SASL mechanism failed" in out.stderr, out.stderr
    assert "SCRAM-SHA-512 is not offered" in out.stderr and "SCRAM-SHA-256, OAUTHBEARER" in out.stderr, out.stderr


def test_a_broker_that_hangs_up_on_the_mechanism_is_named(secured, tmp_path):
    # Tansu 0.6 does not offer PLAIN: it closes the connection on the
    # SaslHandshake instead of answering UNSUPPORTED_SASL_MECHANISM.
    out = check_config(write_config(tmp_path, secured, sasl_extra("PLAIN", USERS[0][1], USERS[0][2])))
    assert out.returncode == 4, out.stdout + out.stderr
    assert "SASL mechanism failed" in out.stderr and "PLAIN" in out.stderr, out.stderr


def sasl_authenticate_answer(corr, version, code=0, message=None, lifetime_ms=0):
    """A SaslAuthenticate answer: code 58 (SASL_AUTHENTICATION_FAILED) with
    a message, as Kafka refuses credentials, or success with a session
    lifetime (KIP-368)."""
    text = message.encode() if message is not None else None
    if version >= 2:  # flexible: header and body with tagged fields
        string = bytes([0]) if text is None else bytes([len(text) + 1]) + text
        return (struct.pack(">ib", corr, 0) + struct.pack(">h", code) + string + bytes([1])
                + struct.pack(">q", lifetime_ms) + bytes([0]))
    string = struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text
    body = struct.pack(">ih", corr, code) + string + struct.pack(">i", 0)
    return body + (struct.pack(">q", lifetime_ms) if version >= 1 else b"")


def test_a_login_refused_on_a_client_connection_fails_what_waited(tmp_path, start_proxy):
    """The proxy started (its control connections logged in); then the
    broker refuses logins. A client's request through the proxy fails as
    for an unreachable broker (its connection closes), the log names the
    broker's message, once for that broker, not once per connection."""
    mechanism, user, password = USERS[0]
    relay_port = harness.free_port()
    broker = SecuredTansu(tmp_path, USERS[:1], topics=[(f"refused-{RUN}", 3)], name="relayed",
                          advertised_port=relay_port)
    broker.start()
    relay = Relay(broker.port, port=relay_port)
    refusing = []
    try:
        def hook(api_key, api_version, corr, frame):
            if api_key == 36 and refusing:
                return sasl_authenticate_answer(corr, api_version, 58, "credentials revoked (test)")
            return None
        relay.answer_requests(hook)
        proxy = start_proxy(upstream=relay.address, extra=sasl_extra(mechanism, user, password))
        # The proxy listens before it logs in to the cluster: refuse only
        # once its own start-up logins are done.
        proxy.wait_for_log(r"Connected to Kafka cluster", timeout=30)
        refusing.append(True)
        for attempt in range(3):
            with kafkawire.connect(proxy.address, 10.0) as s:
                s.sendall(kafkawire.metadata_v1_request(7 + attempt))
                assert kafkawire.wait_closed(s, 15.0), "the client connection should close"
        proxy.wait_for_log(r"SASL authentication failed: credentials revoked \(test\)", timeout=10)
        log = proxy.process.log_text()
        warned = [l for l in log.splitlines() if "[WARN] SASL authentication failed" in l]
        assert len(warned) == 1, log
        assert f"credentials revoked (test) (Kafka broker 127.0.0.1:{relay_port})" in warned[0]
        assert password not in log
    finally:
        relay.close()
        broker.stop()


def test_sessions_with_a_lifetime_are_renewed(broker_behind_relay, start_proxy):
    """KIP-368: a broker whose answer gives session_lifetime_ms closes a
    connection that sends anything but a new SaslHandshake after it. The
    relay plays such a broker's login (PLAIN, lifetime 1.5 s, as Kafka with
    connections.max.reauth.ms=1500) in front of an open Tansu, and counts
    logins. Produce keeps working across several lifetimes, on the client's
    connections (which log in again on themselves) and the proxy's own
    (which reconnect)."""
    upstream, relay = broker_behind_relay
    logins = []

    def hook(api_key, api_version, corr, frame):
        if api_key == 17:
            return struct.pack(">ihi", corr, 0, 1) + kafkawire._string("PLAIN")
        if api_key == 36:
            logins.append(frame)
            return sasl_authenticate_answer(corr, api_version, lifetime_ms=1500)
        return None

    relay.answer_requests(hook)
    name = f"renewed-{RUN}"
    clients.create_topic(upstream.address, name, 2)
    proxy = start_proxy(upstream=relay.address, extra=sasl_extra("PLAIN", "svc", "pw"))
    proxy.wait_for_log("Connected to Kafka cluster")
    at_start = len(logins)
    assert at_start >= 1
    from confluent_kafka import Producer
    producer = Producer(clients.confluent_conf(proxy.address, **{"linger.ms": 5}))
    errors = []
    sent = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        producer.produce(name, value=f"v{sent}".encode(), partition=sent % 2,
                         on_delivery=lambda err, msg: err and errors.append(err))
        sent += 1
        producer.flush(10)
        time.sleep(0.1)
    assert not errors, errors
    # The client's connection logged in again about every 1.3 s (85% of
    # the lifetime): 3 or more renewals in 5 s, beyond its first login
    # (without renewal this counts 2: that first login and one look-up's).
    assert len(logins) - at_start >= 4, len(logins)
    assert all(b"svc" in frame for frame in logins)
    high = clients.high_watermarks(upstream.address, name, range(2))
    assert sum(high.values()) == sent
    assert "SASL authentication failed" not in proxy.process.log_text()


def test_a_login_without_answer_is_given_up_after_the_connection_timeout(broker_behind_relay, start_proxy):
    """The login of a client's upstream connection is bounded by
    kafka.connection_timeout_ms: a broker that never answers SaslAuthenticate
    costs that client's request (its connection closes, as for an
    unreachable broker), not a worker."""
    upstream, relay = broker_behind_relay
    stalled = []

    def hook(api_key, api_version, corr, frame):
        if api_key == 17:
            return struct.pack(">ihi", corr, 0, 1) + kafkawire._string("PLAIN")
        if api_key == 36 and not stalled:
            return sasl_authenticate_answer(corr, api_version)
        return None  # stalled: held below, never answered

    relay.answer_requests(hook)
    extra = sasl_extra("PLAIN", "svc", "pw")
    extra["kafka"]["connection_timeout_ms"] = 1000
    proxy = start_proxy(upstream=relay.address, extra=extra)
    proxy.wait_for_log("Connected to Kafka cluster")
    stalled.append(True)
    hold = relay.hold_requests(36, b"svc")
    try:
        started = time.monotonic()
        with kafkawire.connect(proxy.address, 10.0) as s:
            s.sendall(kafkawire.metadata_v1_request(3))
            assert kafkawire.wait_closed(s, 8.0), "the client connection should close"
        assert time.monotonic() - started < 5.0
        assert hold.seen.is_set()
        proxy.wait_for_log(r"SASL authentication failed: no answer within 1s", timeout=5)
        # Other clients are served meanwhile: the proxy answers ApiVersions itself.
        with kafkawire.connect(proxy.address, 5.0) as s:
            error, _ = kafkawire.api_versions(s, 0, 1)
            assert error == 0
    finally:
        hold.release()
