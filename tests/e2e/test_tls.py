"""TLS toward clients and toward the cluster (issue 10, the TLS half).

Certificates are made per module with the openssl command line
(tls_certs.py). Toward clients: every client (confluent-kafka,
kafka-python, kcat, KafkaJS) produces and consumes over SSL on a remapped
and on a 1:1 topic; mTLS admits only certificates from the configured CA;
a plaintext client on the TLS port is refused and logged; handshakes that
stall are closed within the proxy's bound (listen.handshake_timeout_ms, 10 s)
while others are served. Toward the cluster: stunnel4 terminates TLS in
front of Tansu, which advertises localhost:STUNNEL_PORT, and the proxy
verifies the certificate and the host name.
"""

import json
import selectors
import socket
import ssl
import subprocess
import time

import pytest
from confluent_kafka import KafkaException, Producer

import clients
import harness
import test_kafkajs
import tls_certs
from tls_certs import Stunnel

# The proxy closes a TLS handshake not done within this (TLS_HANDSHAKE_TIMEOUT).
HANDSHAKE_BOUND = 10.0
# Topics with PHYSICAL partitions are shown as VIRTUAL ones; others pass 1:1.
VIRTUAL, PHYSICAL = 6, 2
MAPPING = {"virtual_partitions": VIRTUAL, "physical_partitions": PHYSICAL}


@pytest.fixture(scope="module")
def certs(module_run_dir):
    return tls_certs.make_certs(module_run_dir / "certs")


def listen_tls(certs, **tls):
    return {"listen": {"security": {"protocol": "SSL", "tls": {
        "cert_path": certs.server, "key_path": certs.server_key, **tls}}}}


def mtls(certs):
    return listen_tls(certs, ca_cert_path=certs.ca, client_auth=True)


def rdkafka_ssl(certs, client_cert=True, ca=None):
    """librdkafka (confluent-kafka, kcat) settings for SSL to the proxy."""
    conf = {"security.protocol": "SSL", "ssl.ca.location": ca or certs.ca}
    if client_cert:
        conf.update({"ssl.certificate.location": certs.client, "ssl.key.location": certs.client_key})
    return conf


def kafka_python_ssl(certs):
    return {"security_protocol": "SSL", "ssl_cafile": certs.ca,
            "ssl_certfile": certs.client, "ssl_keyfile": certs.client_key}


def topics(topic):
    """(remapped topic, its virtual partition count), (1:1 topic, its count)."""
    return [(topic(PHYSICAL, "tls-remapped"), VIRTUAL), (topic(3, "tls-plain"), 3)]


def kcat_roundtrip(address, name, records, conf):
    """kcat produces `records` partition by partition with librdkafka
    settings `conf`, then reads the topic back; returns what it read."""
    x = [a for k, v in conf.items() for a in ("-X", f"{k}={v}")]
    for p in sorted({q for q, _, _ in records}):
        lines = b"".join(k + b"\t" + v + b"\n" for q, k, v in records if q == p)
        clients.kcat(address, *x, "-P", "-t", name, "-p", p, "-K", "\t", input=lines)
    out = clients.kcat(address, *x, "-C", "-t", name, "-o", "beginning", "-e",
                       "-f", "%p\t%o\t%k\t%s\n")
    got = []
    for line in out.decode().splitlines():
        p, o, k, v = line.split("\t")
        got.append((int(p), int(o), k.encode(), v.encode()))
    return got


def roundtrip(client, address, name, partitions, certs):
    records = clients.make_records(range(partitions), 12 * partitions, tag=client)
    if client == "confluent":
        conf = rdkafka_ssl(certs)
        clients.produce_confluent(address, name, records, **conf)
        got = clients.consume_confluent(address, name, range(partitions), len(records), **conf)
    elif client == "kafka-python":
        conf = kafka_python_ssl(certs)
        clients.produce_kafka_python_headers(address, name, [(p, k, v, None) for p, k, v in records], **conf)
        got = clients.consume_kafka_python(address, name, range(partitions), len(records), **conf)
    else:
        got = kcat_roundtrip(address, name, records, rdkafka_ssl(certs))
    clients.check_records(records, got)


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "kcat", "kafkajs"])
def test_clients_produce_and_consume_over_tls(client, start_proxy, topic, certs):
    proxy = start_proxy(mapping=MAPPING, extra=mtls(certs), log_level="debug")
    for name, partitions in topics(topic):
        if client == "kafkajs":
            test_kafkajs.run_smoke(proxy.address, name, partitions, per_partition=20, env={
                "KPR_E2E_SSL_CA": certs.ca, "KPR_E2E_SSL_CERT": certs.client,
                "KPR_E2E_SSL_KEY": certs.client_key})
        else:
            roundtrip(client, proxy.address, name, partitions, certs)
    # mTLS: the client certificate's subject is the connection's principal.
    proxy.wait_for_log(r"principal .*CN=good-client")


def test_ec_key_in_sec1_form_serves(start_proxy, topic, certs):
    tls = {"cert_path": certs.server_ec, "key_path": certs.server_ec_key}
    proxy = start_proxy(extra={"listen": {"security": {"protocol": "SSL", "tls": tls}}})
    name = topic(1)
    roundtrip("confluent", proxy.address, name, 1, certs)


def produce_refused(address, name, conf):
    """A produce that must not get through; returns the error."""
    p = Producer(clients.confluent_conf(address, **conf, **{"message.timeout.ms": 5000}))
    errors = []
    p.produce(name, b"must-not-arrive", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(15)
    assert errors and errors[0] is not None, "the produce was delivered"
    return errors[0]


def test_mtls_refuses_other_ca_and_no_certificate(start_proxy, broker, topic, certs):
    proxy = start_proxy(extra=mtls(certs))
    name = topic(1)
    other = {**rdkafka_ssl(certs, client_cert=False),
             "ssl.certificate.location": certs.other_client,
             "ssl.key.location": certs.other_client_key}
    for conf in (other, rdkafka_ssl(certs, client_cert=False)):
        mark = proxy.log_mark()
        produce_refused(proxy.address, name, conf)
        proxy.wait_for_log(r"TLS handshake failed", since=mark)
    # Nothing reached the broker; the proxy still serves a good client.
    assert clients.high_watermarks(broker.address, name, [0]) == {0: 0}
    roundtrip("confluent", proxy.address, name, 1, certs)


def test_plaintext_client_on_tls_port_is_refused(start_proxy, topic, certs):
    proxy = start_proxy(extra=listen_tls(certs))
    mark = proxy.log_mark()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        # An ApiVersions v0 request, as a plaintext client starts.
        body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x03abc"
        s.sendall(len(body).to_bytes(4, "big") + body)
        assert s.recv(100) == b"", "a plaintext client got an answer on the TLS port"
    proxy.wait_for_log(r"plaintext", since=mark)
    roundtrip("confluent", proxy.address, topic(1), 1, certs)


def client_hello(certs):
    """The first flight of a real TLS client (Python's ssl), as bytes."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def wait_closed(socks, deadline, extra=0.0):
    """[seconds after `deadline - HANDSHAKE_BOUND - 3` (when the caller
    opened them) at which each socket saw the proxy close it], reading past
    what the proxy sent first (its ServerHello); waits until all are
    closed or `deadline` + `extra`."""
    origin = deadline - HANDSHAKE_BOUND - 3
    deadline += extra
    open_socks = {s.fileno(): s for s in socks}
    closed = []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while open_socks and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    if s.recv(65536):
                        continue
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    pass
                sel.unregister(s)
                del open_socks[s.fileno()]
                closed.append(time.monotonic() - origin)
    return closed


def test_stalled_handshakes_are_closed_within_the_bound(start_proxy, topic, certs):
    proxy = start_proxy(extra=listen_tls(certs), metrics=True)
    started = time.monotonic()
    # One that stops mid-handshake (its ClientHello half sent) ...
    half = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    # ... and 500 that sent a whole ClientHello and stop there.
    hello = client_hello(certs)
    stalled = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(500)]
    for s in stalled:
        s.sendall(hello)
    opened = time.monotonic() - started
    # Another client is served meanwhile.
    roundtrip("confluent", proxy.address, topic(2), 2, certs)
    served_after = time.monotonic() - started
    assert served_after < HANDSHAKE_BOUND, f"a client waited {served_after:.1f}s behind stalled handshakes"
    closed_after = wait_closed(stalled + [half], started + HANDSHAKE_BOUND + 3, extra=opened)
    assert len(closed_after) == 501, f"{501 - len(closed_after)} stalled handshakes still open after the bound"
    # None closed early; the last within the bound, counted from when the
    # proxy accepted it: the loop answers 500 ClientHellos (an RSA
    # signature each) before it gets to the last accepts, seconds on a busy
    # machine, plus its 200 ms tick.
    closed_after.sort()
    assert HANDSHAKE_BOUND - 0.5 < closed_after[0], closed_after[:5]
    assert closed_after[-1] < opened + HANDSHAKE_BOUND + 2, (opened, closed_after[-5:])
    print(f"stalled handshakes closed after {closed_after[0]:.2f} s (first), {closed_after[250]:.2f} s "
          f"(median), {closed_after[-1]:.2f} s (last); all 500 opened within {opened:.2f} s")
    # Expired connections are logged at debug only (a flood of them must not
    # flood the log) and counted per reason (issue 11).
    closed = proxy.metrics()['kafka_proxy_connections_closed_total{reason="handshake_timeout"}']
    assert closed == 501, f"{closed} handshake timeouts counted, 501 expected"
    for s in stalled + [half]:
        s.close()


# ------------------------------------------------------------ toward the cluster

@pytest.fixture
def tls_broker(broker_factory, tmp_path, certs):
    """(broker, stunnel): a fresh Tansu advertising localhost:STUNNEL_PORT."""
    port = harness.free_port()
    upstream = broker_factory(advertised_port=port, advertised_host="localhost")
    tunnel = Stunnel(tmp_path, port, upstream.address, certs.server, certs.server_key)
    try:
        yield upstream, tunnel
    finally:
        tunnel.stop()


def upstream_tls(ca):
    return {"kafka": {"security_protocol": "SSL", "tls": {"ca_cert_path": ca}}}


def test_upstream_tls_with_hostname_verification(start_proxy, tls_broker, certs):
    upstream, tunnel = tls_broker
    proxy = start_proxy(upstream=f"localhost:{tunnel.port}", mapping=MAPPING,
                        extra=upstream_tls(certs.ca))
    for partitions, virtual in ((PHYSICAL, VIRTUAL), (3, 3)):
        name = f"up-tls-{partitions}"
        # Tansu advertises the TLS port: a plaintext admin client cannot follow it.
        upstream.create_topic_cli(name, partitions)
        records = clients.make_records(range(virtual), 10 * virtual)
        clients.produce_confluent(proxy.address, name, records)
        got = clients.consume_confluent(proxy.address, name, range(virtual), len(records))
        clients.check_records(records, got)


def run_proxy(tmp_path, config, *args):
    path = tmp_path / f"cfg-{harness.free_port()}.yaml"
    path.write_text(harness.to_yaml(config) + "\n")
    return subprocess.run([str(harness.PROXY_BIN), "--config", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def test_upstream_wrong_ca_is_named(tls_broker, certs, tmp_path):
    _, tunnel = tls_broker
    config = harness.proxy_config(f"localhost:{tunnel.port}", harness.free_port(),
                                  extra=upstream_tls(certs.other_ca))
    out = run_proxy(tmp_path, config)
    assert out.returncode == 4, out
    assert f"TLS handshake with Kafka broker localhost:{tunnel.port} failed: certificate verify failed" \
        in out.stderr, out.stderr
    checked = run_proxy(tmp_path, config, "--check-config")
    assert checked.returncode == 4, checked
    assert "TLS handshake" in checked.stderr and "certificate verify failed" in checked.stderr, checked.stderr


def test_missing_certificate_file_is_a_config_error(tmp_path, certs):
    config = harness.proxy_config("127.0.0.1:1", harness.free_port(), extra={
        "listen": {"security": {"protocol": "SSL", "tls": {
            "cert_path": str(tmp_path / "nope.pem"), "key_path": certs.server_key}}}})
    out = run_proxy(tmp_path, config)
    assert out.returncode == 3, out
    assert "listen.security.tls.cert_path" in out.stderr and "nope.pem" in out.stderr, out.stderr


def test_upstream_hostname_mismatch_is_named(broker, certs, tmp_path):
    """A certificate from a trusted CA that names another host: refused
    (Kafka's ssl.endpoint.identification.algorithm=https, the default)."""
    port = harness.free_port()
    tunnel = Stunnel(tmp_path, port, broker.address, certs.elsewhere, certs.elsewhere_key)
    try:
        config = harness.proxy_config(f"localhost:{port}", harness.free_port(),
                                      extra=upstream_tls(certs.ca))
        checked = run_proxy(tmp_path, config, "--check-config")
        assert checked.returncode == 4, checked
        assert f"TLS handshake with Kafka broker localhost:{port} failed: certificate verify failed: " \
            "hostname mismatch" in checked.stderr, checked.stderr
        # insecure_skip_verify accepts it, with a warning.
        config["kafka"]["tls"]["insecure_skip_verify"] = True
        checked = run_proxy(tmp_path, config, "--check-config")
        assert checked.returncode == 0, checked
        assert "INSECURE: kafka.tls.insecure_skip_verify" in checked.stdout, checked.stdout
    finally:
        tunnel.stop()


SASL_USER, SASL_PASSWORD = "tls-user", "tls-User-Pw-5d21"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("client", ["confluent", "kafka-python", "kcat", "kafkajs"])
def test_sasl_ssl_each_mechanism(client, mechanism, start_proxy, topic, certs):
    """SASL_SSL toward clients: the TLS handshake (event loop), then the
    SASL login (worker) on the same connection, for every mechanism. The
    guide's production example (test_production_example.py) runs every
    client over SASL_SSL with SCRAM-SHA-256; this adds PLAIN and
    SCRAM-SHA-512, with each of the four clients."""
    security = listen_tls(certs)
    security["listen"]["security"].update({"protocol": "SASL_SSL", "sasl": {
        "enabled_mechanisms": [mechanism], "credentials": {"users": {SASL_USER: SASL_PASSWORD}}}})
    proxy = start_proxy(mapping=MAPPING, extra=security)
    rdkafka = {**rdkafka_ssl(certs, client_cert=False), "security.protocol": "SASL_SSL",
               "sasl.mechanism": mechanism, "sasl.username": SASL_USER, "sasl.password": SASL_PASSWORD}
    for name, partitions in topics(topic):
        if client == "kafkajs":
            test_kafkajs.run_smoke(proxy.address, name, partitions, per_partition=6, env={
                "KPR_E2E_SSL_CA": certs.ca, "KPR_SASL": json.dumps({
                    "mechanism": mechanism.lower(), "username": SASL_USER, "password": SASL_PASSWORD})})
            continue
        records = clients.make_records(range(partitions), 6 * partitions, tag=f"{client}-{mechanism}")
        if client == "kcat":
            got = kcat_roundtrip(proxy.address, name, records, rdkafka)
        elif client == "confluent":
            conf = rdkafka
            clients.produce_confluent(proxy.address, name, records, **conf)
            got = clients.consume_confluent(proxy.address, name, range(partitions), len(records), **conf)
        else:
            conf = {"security_protocol": "SASL_SSL", "ssl_cafile": certs.ca, "sasl_mechanism": mechanism,
                    "sasl_plain_username": SASL_USER, "sasl_plain_password": SASL_PASSWORD}
            clients.produce_kafka_python_headers(proxy.address, name, [(p, k, v, None) for p, k, v in records],
                                                 **conf)
            got = clients.consume_kafka_python(proxy.address, name, range(partitions), len(records), **conf)
        clients.check_records(records, got)
    assert SASL_PASSWORD not in proxy.process.log_text()
