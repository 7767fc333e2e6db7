"""The user's guide's "Production with SASL/TLS" example, run as written
(issue 10).

config/production-sasl-tls.yaml must hold the guide's block (compared as
parsed YAML: the file adds comments only). The block is copied below
(GUIDE_EXAMPLE) since the guide is not in the repository; where the guide
is at hand ($KPR_GUIDE, default the project's copy), the copy is checked
against it too. The test runs that file's text
with only what has to point at test things replaced, each replacement
checked to hit exactly one place:

  - the certificate, key and CA paths: files made by tls_certs.py;
  - the two bootstrap servers: stunnel4 (TLS, certificate for localhost
    and 127.0.0.1, so hostname verification stays on) in front of Tansu
    started with --authentication and the SCRAM-SHA-256 user proxy-service;
  - the listen, advertised and metrics addresses: free ports on 127.0.0.1
    (0.0.0.0 is replaced to keep the tests on loopback).

APP_USER_PASSWORD, ADMIN_USER_PASSWORD and KAFKA_PASSWORD come from the
environment, as the example expects. Clients log in as app-user with
SASL_SSL + SCRAM-SHA-256 trusting the test CA, on a topic of 100 physical
partitions that the example's 1000:100 mapping shows with 1000.
"""

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient

import clients
import harness
import test_guide_examples
import test_kafkajs
import tls_certs
from secured_tansu import SecuredTansu

ROOT = Path(__file__).resolve().parents[2]
GUIDE = Path(os.environ.get("KPR_GUIDE", "/work/shared/seed/000_df3bb7b68943c204.txt"))
EXAMPLE = ROOT / "config" / "production-sasl-tls.yaml"
PASSWORDS = {"APP_USER_PASSWORD": "app-Pw-5d01c2", "ADMIN_USER_PASSWORD": "admin-Pw-77e9a4",
             "KAFKA_PASSWORD": "svc-Pw-c3b8e0"}
APP_USER = "app-user"
VIRTUAL, PHYSICAL = 1000, 100
TOPIC = f"orders-{uuid.uuid4().hex[:6]}"
# Virtual partitions the clients use: both ends, and ones that share a
# physical partition (v % 100) with another.
USED = [0, 1, 99, 100, 101, 555, 999]


# The user's guide, "### Production with SASL/TLS", verbatim.
GUIDE_EXAMPLE = """\
listen:
  address: "0.0.0.0:9093"
  advertised_address: "kafka-proxy.example.com:9093"
  max_connections: 5000
  security:
    protocol: SASL_SSL
    tls:
      cert_path: "/etc/certs/server.crt"
      key_path: "/etc/certs/server.key"
    sasl:
      enabled_mechanisms:
        - SCRAM-SHA-256
      credentials:
        users:
          app-user: "${APP_USER_PASSWORD}"
          admin-user: "${ADMIN_USER_PASSWORD}"

kafka:
  bootstrap_servers:
    - "broker1.internal:9093"
    - "broker2.internal:9093"
  security_protocol: SASL_SSL
  tls:
    ca_cert_path: "/etc/certs/ca.crt"
  sasl:
    mechanism: SCRAM-SHA-256
    username: "proxy-service"
    password: "${KAFKA_PASSWORD}"

mapping:
  virtual_partitions: 1000
  physical_partitions: 100

metrics:
  enabled: true
  address: "0.0.0.0:9090"

logging:
  level: info
  format: json
"""


def test_config_file_is_the_guides_example():
    text = EXAMPLE.read_text()
    assert yaml.safe_load(text) == yaml.safe_load(GUIDE_EXAMPLE)
    # Its header says how to run it, not that it cannot run.
    assert "NOT IMPLEMENTED" not in text
    assert "kpr-proxy --config config/production-sasl-tls.yaml" in text
    if GUIDE.is_file():
        guide = GUIDE.read_text()
        section = guide[guide.index("### Production with SASL/TLS"):]
        assert re.search(r"```yaml\n(.*?)```", section, re.S).group(1) == GUIDE_EXAMPLE


def replace_once(text, old, new):
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {EXAMPLE}"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def certs(module_run_dir):
    return tls_certs.make_certs(module_run_dir / "certs")


@pytest.fixture(scope="module")
def tls_cluster(module_run_dir, certs):
    """Tansu requiring SCRAM (user proxy-service), advertising
    localhost:TUNNEL, behind stunnel4 on TUNNEL."""
    tunnel_port = harness.free_port()
    broker = SecuredTansu(module_run_dir, [("SCRAM-SHA-256", "proxy-service",
                                            PASSWORDS["KAFKA_PASSWORD"])],
                          topics=[(TOPIC, PHYSICAL), (TOPIC + "-kafkajs", PHYSICAL)],
                          advertised_port=tunnel_port, advertised_host="localhost")
    tunnel = None
    try:
        broker.start()
        tunnel = tls_certs.Stunnel(module_run_dir, tunnel_port, broker.address,
                                   certs.server, certs.server_key)
        yield tunnel_port
    finally:
        if tunnel is not None:
            tunnel.stop()
        broker.stop()


def example_for_tests(certs, tunnel_port):
    """(config text, parsed) of the example pointed at the test's things."""
    listen = f"127.0.0.1:{harness.free_port()}"
    text = EXAMPLE.read_text()
    for old, new in (("/etc/certs/server.crt", certs.server),
                     ("/etc/certs/server.key", certs.server_key),
                     ("/etc/certs/ca.crt", certs.ca),
                     ("broker1.internal:9093", f"localhost:{tunnel_port}"),
                     ("broker2.internal:9093", f"127.0.0.1:{tunnel_port}"),
                     # 0.0.0.0 replaced: the tests stay on loopback.
                     ("0.0.0.0:9093", listen),
                     ("kafka-proxy.example.com:9093", listen),
                     ("0.0.0.0:9090", f"127.0.0.1:{harness.free_port()}")):
        text = replace_once(text, old, new)
    return text, yaml.safe_load(text)


@pytest.fixture(scope="module")
def passwords():
    with pytest.MonkeyPatch.context() as mp:
        for name, value in PASSWORDS.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def production(module_run_dir, certs, tls_cluster, passwords):
    """(proxy, config path): kpr-proxy running the example."""
    text, config = example_for_tests(certs, tls_cluster)
    proxy = harness.Proxy(module_run_dir, config, name="production", config_text=text)
    try:
        proxy.start()
        yield proxy
    finally:
        code, graceful = proxy.stop(10.0)
        log = proxy.process.log_text() if proxy.process else ""
    assert graceful and code == 0, f"exit {code} (graceful={graceful})\n{proxy.describe()}"
    for secret in PASSWORDS.values():
        assert secret not in log, "a password is in the proxy's log"


def rdkafka_conf(certs):
    return {"security.protocol": "SASL_SSL", "ssl.ca.location": certs.ca,
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": APP_USER,
            "sasl.password": PASSWORDS["APP_USER_PASSWORD"]}


def test_the_example_serves_confluent_kafka(production, certs):
    conf = rdkafka_conf(certs)
    md = AdminClient(clients.confluent_conf(production.address, **conf)).list_topics(TOPIC, timeout=30)
    assert len(md.topics[TOPIC].partitions) == VIRTUAL
    records = clients.make_records(USED, 10 * len(USED), tag="confluent")
    clients.produce_confluent(production.address, TOPIC, records, **conf)
    got = clients.consume_confluent(production.address, TOPIC, USED, len(records), **conf)
    clients.check_records(records, got)
    # JSON logs, as the example asks, with the guide's start-up lines; the
    # metrics endpoint answers.
    log = production.process.log_text()
    first = log.splitlines()[0]
    assert isinstance(json.loads(first), dict), first
    messages = [(e["level"], e["msg"]) for e in map(json.loads, log.splitlines())]
    test_guide_examples.assert_in_order(messages, test_guide_examples.start_up_lines(
        production.address, ["Mapping: 1000 virtual -> 100 physical partitions (10:1)"]), log)
    metrics = harness.scrape_metrics(production.metrics_address)
    assert "kafka_proxy_connections_active" in metrics, sorted(metrics)


def test_check_config_passes_on_the_example(production):
    out = subprocess.run([harness.PROXY_BIN, "--check-config", "--config", production.config_path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for secret in PASSWORDS.values():
        assert secret not in out.stdout + out.stderr


@pytest.mark.parametrize("client", ["kafka-python", "kcat", "kafkajs"])
def test_the_example_serves_other_clients(production, certs, client):
    used = USED[:4]
    records = clients.make_records(used, 5 * len(used), tag=client)
    address = production.address
    if client == "kafka-python":
        conf = {"security_protocol": "SASL_SSL", "ssl_cafile": certs.ca,
                "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": APP_USER,
                "sasl_plain_password": PASSWORDS["APP_USER_PASSWORD"]}
        clients.produce_kafka_python_headers(address, TOPIC, [(p, k, v, None) for p, k, v in records],
                                             **conf)
        got = clients.consume_kafka_python(address, TOPIC, used, len(records), **conf)
        # The records of the other clients are on these partitions too.
        got = [r for r in got if client.encode() in r[3]]
    elif client == "kcat":
        x = [a for k, v in rdkafka_conf(certs).items() for a in ("-X", f"{k}={v}")]
        got = []
        for p in used:
            lines = b"".join(k + b"\t" + v + b"\n" for q, k, v in records if q == p)
            clients.kcat(address, *x, "-P", "-t", TOPIC, "-p", p, "-K", "\t", input=lines)
            out = clients.kcat(address, *x, "-C", "-t", TOPIC, "-p", p, "-o", "beginning", "-e",
                               "-q", "-f", "%p\t%o\t%k\t%s\n")
            for line in out.decode().splitlines():
                part, off, k, v = line.split("\t")
                if client in v:
                    got.append((int(part), int(off), k.encode(), v.encode()))
    else:
        # KafkaJS produces to virtual partitions 0-2 of a topic of its own
        # and reads them back in a consumer group (all 1000 assigned).
        sasl = {"mechanism": "scram-sha-256", "username": APP_USER,
                "password": PASSWORDS["APP_USER_PASSWORD"]}
        test_kafkajs.run_smoke(address, TOPIC + "-kafkajs", 3, per_partition=10,
                               env={"KPR_E2E_SSL_CA": certs.ca, "KPR_SASL": json.dumps(sasl)})
        return
    clients.check_records(records, got)
