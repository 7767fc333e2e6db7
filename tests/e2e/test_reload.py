"""Live reload on SIGHUP (`systemctl reload kpr-proxy`, issue 12).

One proxy (SASL_SSL toward clients, a remapped topic, metrics on) gets its
file changed and SIGHUP after each of: (a) logging.level info -> debug,
(b) a new server certificate, (c) a new SASL user, (d) a broken file,
(e) a changed V for an existing topic (refused) together with another new
user (applied), (f) a rule for a topic that had none. Throughout, one
confluent-kafka producer produces continuously and a raw client connection
stays open and is used after every step: neither may be dropped, and every
record must be acknowledged.

Results, as documented in the man page (SIGNALS):
kafka_proxy_config_reloads_total{result="applied"} when every change was
applied, "partial" when some field was refused (each named by a WARN line,
the rest applied), "failed" when the file did not load (ERROR, nothing
changed). Last, (g) the metrics endpoint moves to another port.
"""

import logging
import os
import signal
import socket
import ssl
import threading
import time

import pytest
from confluent_kafka import Producer

import clients
import harness
import kafkawire
import tls_certs

USERS = {"alice": "alice-Pw-51c2"}
CAROL, DAVE = ("carol", "carol-Pw-0d9e"), ("dave", "dave-Pw-77a1")
V, P = 4, 2
SASL_AUTHENTICATION_FAILED = 58


@pytest.fixture(scope="module")
def certs(module_run_dir):
    made = tls_certs.make_certs(module_run_dir / "certs")
    tls_certs.server_cert(made.dir, "rotated", "/CN=localhost/O=kpr-rotated")
    return made


def tls_connect(address, certs):
    """A TLS connection to the proxy, the server certificate verified
    against the test CA."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.settimeout(10)
    return sock


def organization(sock):
    """The O= of the server certificate the connection got, or None."""
    for rdn in sock.getpeercert()["subject"]:
        for key, value in rdn:
            if key == "organizationName":
                return value
    return None


def login(address, certs, user, password):
    """A fresh TLS connection logged in with PLAIN: (socket, error code)."""
    sock = tls_connect(address, certs)
    kafkawire.api_versions(sock, 1, 1)
    _, error, message = kafkawire.sasl_plain(sock, user, password)[:3]
    return sock, error, message


def partition_count(sock, name, correlation_id):
    _, _, tps = kafkawire.metadata_v1(sock, [name], correlation_id)
    return len(tps[name]["partitions"])


class ContinuousProducer:
    """One confluent-kafka producer sending a record every 20 ms from a
    thread until stopped; every error and every librdkafka log line saying
    a connection failed or was dropped ("FAIL": "Disconnected", "Connect
    to ... failed") is kept."""

    def __init__(self, address, certs, topic):
        self.errors, self.delivered, self.failed, self.sent = [], [], [], 0
        errors = self.errors

        class Keep(logging.Handler):
            def emit(self, record):
                if "FAIL" in record.getMessage() or record.levelno >= logging.ERROR:
                    errors.append(record.getMessage())

        logger = logging.getLogger(f"rdkafka-{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(Keep())
        self.producer = Producer(clients.confluent_conf(address, **{
            "security.protocol": "SASL_SSL", "ssl.ca.location": certs.ca,
            "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": USERS["alice"],
            "linger.ms": 5, "message.timeout.ms": 30000,
            "error_cb": lambda err: self.errors.append(str(err)), "logger": logger}))
        self.topic = topic
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def report(self, err, msg):
        (self.failed if err is not None else self.delivered).append(err or msg.offset())

    def run(self):
        while not self.stopping.is_set():
            self.producer.produce(self.topic, key=str(self.sent).encode(), value=b"v%d" % self.sent,
                                  on_delivery=self.report)
            self.sent += 1
            self.producer.poll(0.02)

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        return self.producer.flush(30)


def test_sighup_reload(start_proxy, broker, certs):
    events = f"events-{broker.port}"
    fresh = f"fresh-{broker.port}"
    clients.create_topic(broker.address, events, P)
    clients.create_topic(broker.address, fresh, 2)
    sasl = {"enabled_mechanisms": ["PLAIN"], "credentials": {"users": dict(USERS)}}
    tls = {"cert_path": certs.server, "key_path": certs.server_key}
    mapping = {"topics": {events: {"virtual_partitions": V, "physical_partitions": P}}}
    proxy = start_proxy(mapping=mapping, metrics=True, extra={
        "listen": {"security": {"protocol": "SASL_SSL", "tls": tls, "sasl": sasl}}})
    config = proxy.config

    def reload(change=None, text=None):
        """Write the changed file, SIGHUP, return the reload's log lines."""
        if change:
            harness._merge(config, change)
        proxy.config_path.write_text(text if text is not None else harness.to_yaml(config) + "\n")
        mark = proxy.log_mark()
        os.kill(proxy.process.pid, signal.SIGHUP)
        time.sleep(0.3)
        assert proxy.alive(), "SIGHUP stopped the proxy\n" + proxy.describe()
        proxy.wait_for_log(r"Configuration reload", since=mark)
        return proxy.log_since(mark)

    def reloads(result):
        return proxy.metrics().get(f'kafka_proxy_config_reloads_total{{result="{result}"}}', 0)

    # The connection that must survive every reload, logged in and used.
    kept, error, _ = login(proxy.address, certs, "alice", USERS["alice"])
    assert error == 0
    correlation = iter(range(100, 10_000))
    assert partition_count(kept, events, next(correlation)) == V
    producer = ContinuousProducer(proxy.address, certs, events)
    time.sleep(1)

    # (a) info -> debug: debug lines appear after, not before.
    mark = proxy.log_mark()
    tls_connect(proxy.address, certs).close()
    time.sleep(0.5)
    assert "[DEBUG]" not in proxy.log_since(mark)
    lines = reload({"logging": {"level": "debug"}})
    assert "logging.level" in lines, lines
    mark = proxy.log_mark()
    tls_connect(proxy.address, certs).close()
    print(proxy.wait_for_log(r"\[DEBUG\].*TLS handshake with client", since=mark))
    assert reloads("applied") == 1
    assert partition_count(kept, events, next(correlation)) == V

    # (b) a new server certificate: new connections get it, the kept one stays.
    with tls_connect(proxy.address, certs) as before:
        assert organization(before) is None
    lines = reload({"listen": {"security": {"tls": {
        "cert_path": certs.rotated, "key_path": certs.rotated_key}}}})
    assert "listen.security.tls" in lines, lines
    with tls_connect(proxy.address, certs) as after:
        assert organization(after) == "kpr-rotated"
    assert partition_count(kept, events, next(correlation)) == V

    # (c) a new SASL user: refused before, admitted after.
    sock, error, message = login(proxy.address, certs, *CAROL)
    sock.close()
    assert error == SASL_AUTHENTICATION_FAILED, (error, message)
    lines = reload({"listen": {"security": {"sasl": {"credentials": {"users": dict([CAROL])}}}}})
    assert "listen.security.sasl" in lines, lines
    sock, error, message = login(proxy.address, certs, *CAROL)
    sock.close()
    assert error == 0, (error, message)
    assert reloads("applied") == 3
    assert partition_count(kept, events, next(correlation)) == V

    # (d) a broken file: ERROR naming the problem, the running config stays.
    broken = (harness.to_yaml(config) + "\n").replace("listen:\n", "listen:\n  max_connections: lots\n", 1)
    assert "lots" in broken
    reload(text=broken)
    error_line = proxy.wait_for_log(r"ERROR.*Configuration reload failed", since=0)
    assert "max_connections" in error_line, error_line
    print(error_line)
    assert reloads("failed") == 1
    sock, error, _ = login(proxy.address, certs, *CAROL)
    sock.close()
    assert error == 0, "carol (from the last good file) refused after a failed reload"
    with tls_connect(proxy.address, certs) as after:
        assert organization(after) == "kpr-rotated"
    assert partition_count(kept, events, next(correlation)) == V

    # (e) V of an existing topic changed: refused with a WARN naming the
    # field, the old mapping serves; the other change in the file applies.
    rule = config["mapping"]["topics"][events]
    rule["virtual_partitions"] = 2 * V
    lines = reload({"listen": {"security": {"sasl": {"credentials": {"users": dict([DAVE])}}}}})
    warn = proxy.wait_for_log(rf"WARN.*mapping\.topics\.{events}", since=0)
    assert "virtual_partitions" in warn, warn
    print(warn)
    assert reloads("partial") == 1
    assert partition_count(kept, events, next(correlation)) == V
    sock, error, _ = login(proxy.address, certs, *DAVE)
    sock.close()
    assert error == 0, "dave, added beside the refused change, not admitted"
    rule["virtual_partitions"] = V

    # (f) a rule for a topic that had none: served remapped after.
    assert partition_count(kept, fresh, next(correlation)) == 2
    lines = reload({"mapping": {"topics": {fresh: {"virtual_partitions": 6, "physical_partitions": 2}}}})
    assert "mapping" in lines, lines
    assert partition_count(kept, fresh, next(correlation)) == 6
    assert partition_count(kept, events, next(correlation)) == V

    # (g) the metrics endpoint moves: the new address answers, the old one
    # is closed.
    old_metrics = proxy.metrics_address
    applied = reloads("applied")
    reload({"metrics": {"address": f"127.0.0.1:{harness.free_port()}"}})
    assert reloads("applied") == applied + 1, "scraped at the new address"
    with pytest.raises(OSError):
        harness.scrape_metrics(old_metrics, timeout=2)

    left = producer.stop()
    print(f"producer: {producer.sent} sent, {len(producer.delivered)} acknowledged, "
          f"errors {producer.errors}")
    assert left == 0 and not producer.failed, producer.failed[:5]
    assert len(producer.delivered) == producer.sent
    assert not producer.errors, f"the producer's connection had errors: {producer.errors}"
    assert partition_count(kept, events, next(correlation)) == V
    kept.close()
