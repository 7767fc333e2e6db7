"""Identity pass-through (kafka.sasl.mode: passthrough, issue 10).

Clients log in to the proxy with PLAIN (listen SASL_PLAINTEXT); the proxy
holds no user list and logs each client's upstream connections in to the
broker as that client, with SCRAM-SHA-256 (kafka SASL_PLAINTEXT). Tansu
(secured_tansu.py) knows two client users and the proxy's service user;
the proxy's own look-ups use the service identity.

A client's login succeeds only when the broker accepts its credentials:
a password Tansu does not know is refused with SASL_AUTHENTICATION_FAILED
(58), which shows the broker decided (the proxy has nothing to check it
against). As Kafka: the refusal answers the SaslAuthenticate, then the
connection is closed (SaslServerAuthenticator).
"""

import uuid

import pytest
from confluent_kafka import Producer

import clients
import kafkawire
import virtual
from secured_tansu import SecuredTansu

MECHANISM = "SCRAM-SHA-256"
SERVICE = ("svc-proxy", "svc-Pw-51d0")
CLIENT_USERS = {"ann": "ann-Pw-0c7e21", "ben": "ben-Pw-a94f03"}
RUN = uuid.uuid4().hex[:6]
REMAPPED, ONE_TO_ONE = f"pass-remapped-{RUN}", f"pass-plain-{RUN}"
V, P = 8, 2


@pytest.fixture(scope="module")
def secured(module_run_dir):
    users = [(MECHANISM, *SERVICE)] + [(MECHANISM, u, pw) for u, pw in CLIENT_USERS.items()]
    b = SecuredTansu(module_run_dir, users, topics=[(REMAPPED, P), (ONE_TO_ONE, 3)], name="passthrough")
    try:
        b.start()
        yield b
    finally:
        b.stop()


def passthrough_extra():
    return {
        "listen": {"security": {"protocol": "SASL_PLAINTEXT", "sasl": {"enabled_mechanisms": ["PLAIN"]}}},
        "kafka": {"security_protocol": "SASL_PLAINTEXT",
                  "sasl": {"mode": "passthrough", "mechanism": MECHANISM,
                           "username": SERVICE[0], "password": SERVICE[1]}},
    }


@pytest.fixture
def proxy(secured, start_proxy):
    return start_proxy(upstream=secured, mapping=virtual.mapping(V, P), extra=passthrough_extra(), metrics=True,
                       log_level="debug")


def plain_conf(user, password):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": password}


def test_each_client_is_its_own_identity_upstream(proxy):
    for user, password in CLIENT_USERS.items():
        conf = plain_conf(user, password)
        records = clients.make_records(range(3), 60, tag=f"one-{user}")
        clients.produce_confluent(proxy.address, ONE_TO_ONE, records, **conf)
        consumed = clients.consume_confluent(proxy.address, ONE_TO_ONE, range(3), 60 * 2 if user == "ben" else 60, **conf)
        mine = [c for c in consumed if f":one-{user}".encode() in c[3]]
        clients.check_records(records, mine)
        remapped = clients.make_records(range(V), 80, tag=f"rem-{user}")
        clients.produce_confluent(proxy.address, REMAPPED, remapped, **conf)
        got = clients.consume_confluent(proxy.address, REMAPPED, range(V), 80 * 2 if user == "ben" else 80, **conf)
        clients.check_records(remapped, [c for c in got if f":rem-{user}".encode() in c[3]])
    log = proxy.log_since(0)
    for secret in [*CLIENT_USERS.values(), SERVICE[1]]:
        assert secret not in log, "a password reached the log"
    assert "SASL authentication failed" not in log, log[-3000:]
    for user in CLIENT_USERS:
        assert f"authenticated as {user} with SASL mechanism PLAIN, accepted by the Kafka broker" in log


def test_a_password_the_broker_does_not_know_is_refused_by_the_broker(proxy):
    # A client that logged in keeps being served throughout.
    good = kafkawire.connect(proxy.address)
    kafkawire.api_versions(good, 1, 1)
    assert kafkawire.sasl_plain(good, "ann", CLIENT_USERS["ann"])[1] == 0
    for user, password in (("ann", "not-anns-password"), ("mallory", "whatever")):
        sock = kafkawire.connect(proxy.address)
        kafkawire.api_versions(sock, 1, 1)
        _, error, message, _, _ = kafkawire.sasl_plain(sock, user, password)
        assert error == kafkawire.SASL_AUTHENTICATION_FAILED, (error, message)
        # The broker's words, passed on: Tansu ends the SCRAM exchange with
        # e=invalid-proof or e=unknown-user; Kafka answers
        # SASL_AUTHENTICATION_FAILED naming SCRAM-SHA-256. Either way SCRAM,
        # which only the proxy's upstream login spoke: the broker decided.
        assert "SCRAM" in message, message
        assert kafkawire.wait_closed(sock, 10), "connection left open after a refused login"
        sock.close()
        _, _, topics = kafkawire.metadata_v1(good, [ONE_TO_ONE], correlation_id=30)
        assert ONE_TO_ONE in topics, topics
    # A real client sees the refusal as an authentication failure.
    errors = []
    producer = Producer(clients.confluent_conf(proxy.address, **plain_conf("ben", "wrong"), **{
        "error_cb": lambda e: errors.append(str(e)), "message.timeout.ms": 3000}))
    producer.produce(ONE_TO_ONE, b"must-not-arrive", partition=0)
    for _ in range(50):
        if any("Authentication failed" in e or "authentication" in e.lower() for e in errors):
            break
        producer.poll(0.2)
    producer.purge()
    producer.flush(5)
    assert any("authentication" in e.lower() for e in errors), errors
    values = proxy.metrics()
    assert values.get('kafka_proxy_authentication_failures_total{mechanism="PLAIN"}', 0) >= 3, values
    log = proxy.log_since(0)
    assert "not-anns-password" not in log and "whatever" not in log
    good.close()
