"""OAUTHBEARER on both sides of the proxy (issue 10).

Toward clients the proxy validates signed JWTs against a JWKS file
(listen.security.sasl.oauthbearer); keys and tokens are made here with the
openssl command line (jwt_tokens.py). A bad token is refused as Kafka's
OAuthBearerSaslServer does (RFC 7628 section 3.2.2): the SaslAuthenticate
answer carries no error and the JSON status `{"status":"invalid_token"}`,
the client acknowledges with a lone \\x01, and only then comes
SASL_AUTHENTICATION_FAILED (58). The session lifetime (KIP-368) is bounded
by the token's expiry, as Kafka's SaslServerAuthenticator bounds it by the
credential's lifetime.

Toward the cluster the proxy sends the token of kafka.sasl.token_path.
Tansu 0.6 cannot check OAUTHBEARER, so a relay plays a Kafka broker's
login (SaslHandshake offering OAUTHBEARER, SaslAuthenticate answered with
success) and records the tokens it receives.
"""

import struct
import time
import uuid

import pytest
from confluent_kafka import Producer

import clients
import kafkawire
import virtual
from jwt_tokens import SigningKey, make_token, write_jwks

ISSUER, AUDIENCE = "https://idp.kpr.test", "kafka-proxy"
V, P = 4, 2
PER_PARTITION = 5
RUN = uuid.uuid4().hex[:6]
INVALID_TOKEN_STATUS = b'{"status":"invalid_token"}'


class Keys:
    def __init__(self, directory):
        self.rsa = SigningKey.generate(directory, "rsa-1", "RS256")
        self.ec = SigningKey.generate(directory, "ec-1", "ES256")
        # Another key under the same kid: its tokens fail the signature check.
        (directory / "impostor").mkdir(exist_ok=True)
        self.impostor = SigningKey.generate(directory / "impostor", "rsa-1", "RS256")
        self.jwks = write_jwks(directory / "jwks.json", [self.rsa, self.ec])

    def token(self, key=None, subject="alice", lifetime_s=300, audience=AUDIENCE):
        return make_token(key or self.rsa, ISSUER, audience, subject=subject, lifetime_s=lifetime_s)


@pytest.fixture(scope="module")
def keys(module_run_dir):
    return Keys(module_run_dir)


@pytest.fixture
def oauth_proxy(start_proxy, keys):
    def start(lifetime_ms=None, **kw):
        sasl = {"enabled_mechanisms": ["OAUTHBEARER"],
                "oauthbearer": {"jwks_path": str(keys.jwks), "issuer": ISSUER, "audience": AUDIENCE}}
        if lifetime_ms is not None:
            sasl["session_lifetime_ms"] = lifetime_ms
        extra = {"listen": {"security": {"protocol": "SASL_PLAINTEXT", "sasl": sasl}}}
        return start_proxy(mapping=virtual.mapping(V, P, {"one-.*": (3, 3)}), extra=extra, **kw)

    return start


def confluent_oauth(token):
    # librdkafka calls oauth_cb for a token (and its expiry, in seconds
    # since the epoch) before it logs in.
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": lambda _config: (token, time.time() + 300)}


def initial_response(token):
    return b"n,,\x01auth=Bearer " + token.encode() + b"\x01\x01"


def oauth_raw(address, token, version=1):
    """A fresh connection: SaslHandshake v1 OAUTHBEARER, then the token.
    Returns (socket, first SaslAuthenticate answer)."""
    sock = kafkawire.connect(address)
    kafkawire.api_versions(sock, 1, 1)
    _, error, mechanisms = kafkawire.parse_sasl_handshake_response(
        kafkawire.round_trip(sock, kafkawire.sasl_handshake_request(10, "OAUTHBEARER")))
    assert error == 0, (error, mechanisms)
    answer = kafkawire.parse_sasl_authenticate_response(version, kafkawire.round_trip(
        sock, kafkawire.sasl_authenticate_request(11, initial_response(token), version)))
    return sock, answer


def refused_raw(address, token):
    """A bad token's whole refusal; returns the SASL_AUTHENTICATION_FAILED
    message (after checking Kafka's two-step refusal)."""
    sock, (_, error, _, challenge, _) = oauth_raw(address, token)
    assert error == 0 and challenge == INVALID_TOKEN_STATUS, (error, challenge)
    _, error, message, _, _ = kafkawire.parse_sasl_authenticate_response(1, kafkawire.round_trip(
        sock, kafkawire.sasl_authenticate_request(12, b"\x01", 1)))
    assert error == kafkawire.SASL_AUTHENTICATION_FAILED, (error, message)
    assert kafkawire.wait_closed(sock, 10), "connection left open after a refused token"
    sock.close()
    assert token not in message
    return message


@pytest.mark.parametrize("client", ["confluent-kafka", "kafkajs"])
def test_client_produces_and_consumes_with_a_token(broker, oauth_proxy, keys, client):
    proxy = oauth_proxy()
    for name, partitions in ((f"vt-oauth-{client}-{RUN}", V), (f"one-oauth-{client}-{RUN}", 3)):
        clients.create_topic(broker.address, name, P if partitions == V else 3)
        if client == "confluent-kafka":
            conf = confluent_oauth(keys.token(keys.ec if partitions == V else keys.rsa))
            records = clients.make_records(range(partitions), partitions * PER_PARTITION, tag=client)
            clients.produce_confluent(proxy.address, name, records, **conf)
            consumed = clients.consume_confluent(proxy.address, name, range(partitions), len(records), **conf)
        else:
            sasl = {"mechanism": "oauthbearer", "token": keys.token()}
            records, consumed = clients.kafkajs_smoke(proxy.address, name, partitions, PER_PARTITION, sasl)
        clients.check_records(records, consumed)
    assert "SASL authentication failed" not in proxy.process.log_text()


def test_bad_tokens_are_refused_and_nothing_reaches_the_broker(broker, oauth_proxy, keys):
    proxy = oauth_proxy(metrics=True)
    name = f"one-oauth-refused-{RUN}"
    clients.create_topic(broker.address, name, 3)
    good, (_, error, _, challenge, _) = oauth_raw(proxy.address, keys.token(subject="carol"))
    assert error == 0 and challenge == b"", (error, challenge)

    cases = {"expired": (keys.token(lifetime_s=-120), "expired"),
             "other key": (keys.token(keys.impostor), "signature does not verify"),
             "audience": (keys.token(audience="another-service"), AUDIENCE)}
    for case, (token, named) in cases.items():
        message = refused_raw(proxy.address, token)
        assert named in message, (case, message)
        # The client that logged in is served meanwhile.
        _, _, topics = kafkawire.metadata_v1(good, [name], correlation_id=30)
        assert name in topics, topics

    # A real client with an expired token: refused, its record never sent.
    errors = []
    producer = Producer(clients.confluent_conf(proxy.address, **confluent_oauth(keys.token(lifetime_s=-120)), **{
        "error_cb": lambda e: errors.append(str(e)), "message.timeout.ms": 3000}))
    producer.produce(name, b"must-not-arrive", partition=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("expired" in e for e in errors):
        producer.poll(0.2)
    producer.purge()
    producer.flush(5)
    assert any("expired" in e for e in errors), errors

    assert clients.high_watermarks(broker.address, name, range(3)) == {0: 0, 1: 0, 2: 0}
    values = proxy.metrics()
    assert values.get('kafka_proxy_authentication_failures_total{mechanism="OAUTHBEARER"}', 0) >= 4, values
    log = proxy.log_since(0)
    assert "expired" in log and "WARN" in log, log[-3000:]
    for token, _ in cases.values():
        assert token not in log
    good.close()


def test_session_lifetime_follows_the_token(oauth_proxy, keys):
    """A token that expires in 3 s opens a session of at most 3 s, though
    session_lifetime_ms allows a minute; past it a request closes the
    connection (KIP-368)."""
    proxy = oauth_proxy(lifetime_ms=60_000)
    sock, (_, error, _, _, lifetime) = oauth_raw(proxy.address, keys.token(lifetime_s=3))
    assert error == 0
    assert 0 < lifetime <= 3000, lifetime
    kafkawire.metadata_v1(sock, [], correlation_id=20)
    long_lived, (_, error, _, _, lifetime) = oauth_raw(proxy.address, keys.token(lifetime_s=3600))
    assert error == 0 and lifetime == 60_000, lifetime
    time.sleep(3.5)
    sock.sendall(kafkawire.metadata_v1_request(21))
    assert kafkawire.wait_closed(sock, 10), "served after the token expired"
    sock.close()
    kafkawire.metadata_v1(long_lived, [], correlation_id=22)
    long_lived.close()


def oauth_broker_login(tokens):
    """A relay hook playing a Kafka broker with OAUTHBEARER enabled: it
    offers the mechanism and accepts any token, recording each
    SaslAuthenticate request."""
    def hook(api_key, api_version, corr, frame):
        if api_key == kafkawire.API_SASL_HANDSHAKE:
            return struct.pack(">ihi", corr, 0, 1) + kafkawire._string("OAUTHBEARER")
        if api_key == kafkawire.API_SASL_AUTHENTICATE:
            tokens.append(frame)
            if api_version >= 2:
                return struct.pack(">ibh", corr, 0, 0) + bytes([0, 1]) + struct.pack(">q", 0) + bytes([0])
            return struct.pack(">ihhi", corr, 0, -1, 0) + (struct.pack(">q", 0) if api_version >= 1 else b"")
        return None
    return hook


def test_upstream_login_sends_the_token_of_the_file(broker_behind_relay, start_proxy, tmp_path, keys):
    upstream, relay = broker_behind_relay
    logins = []
    relay.answer_requests(oauth_broker_login(logins))
    name = f"oauth-upstream-{RUN}"
    clients.create_topic(upstream.address, name, 2)
    token_path = tmp_path / "upstream.jwt"
    first, second = keys.token(subject="svc-1"), keys.token(subject="svc-2")
    token_path.write_text(first + "\n")
    extra = {"kafka": {"security_protocol": "SASL_PLAINTEXT",
                       "sasl": {"mechanism": "OAUTHBEARER", "token_path": str(token_path)}}}
    proxy = start_proxy(upstream=relay.address, extra=extra)
    proxy.wait_for_log("Connected to Kafka cluster")
    assert logins and all(initial_response(first) in frame for frame in logins), logins
    clients.produce_confluent(proxy.address, name, [(0, None, b"with-first")])

    token_path.write_text(second + "\n")
    seen = len(logins)
    clients.produce_confluent(proxy.address, name, [(1, None, b"with-second")])
    assert len(logins) > seen
    assert all(initial_response(second) in frame for frame in logins[seen:]), logins[seen:]
    assert clients.high_watermarks(upstream.address, name, range(2)) == {0: 1, 1: 1}
    log = proxy.process.log_text()
    assert first not in log and second not in log
