"""Processes for the end-to-end tests: the Tansu broker and the kpr-proxy.

Every process is started in its own session with its output in a log file,
recorded in a registry, and killed at teardown (and at interpreter exit, as a
last resort) so that a failing test leaves nothing running.

KPR_E2E_DIRECT=1 makes the proxy fixtures hand out the broker's own address
instead of starting kpr-proxy: a way to check a test's client logic against
Tansu alone. Checks of the proxy's log are then skipped (see DirectProxy);
this mode is for developing tests, never for CI.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import kafkawire

ROOT = Path(__file__).resolve().parents[2]
PROXY_BIN = Path(os.environ.get("KPR_PROXY_BIN", ROOT / "target" / "release" / "kpr-proxy"))
DIRECT = os.environ.get("KPR_E2E_DIRECT") == "1"
INSTALL_HINT = "run scripts/install-deps"
TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
             "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")

_live = []  # every Popen started here, for the last-resort cleanup


def _kill_leftovers():
    for proc in _live:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_kill_leftovers)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def tansu_path():
    cargo_bin = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
    path = shutil.which("tansu") or shutil.which("tansu", path=str(cargo_bin))
    if path is None:
        pytest.fail(f"tansu not found on PATH or in {cargo_bin}: {INSTALL_HINT}")
    return path


def tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"({path}: no log)"
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _live.append(self.proc)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout. Returns (exit code, graceful)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return self.proc.returncode, False
        return self.proc.returncode, True

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def tail(self, lines=40):
        return tail(self.log_path, lines)

    def describe(self):
        return f"{self.name} (pid {self.pid}, log {self.log_path}):\n{self.tail()}"


# ------------------------------------------------------------------ broker

class Broker:
    """A Tansu broker on 127.0.0.1:port; storage memory:// or sqlite://FILE."""

    def __init__(self, run_dir, port=None, storage="memory://tansu/", name="broker",
                 advertised_port=None, advertised_host="127.0.0.1"):
        self.run_dir = Path(run_dir)
        self.port = port or free_port()
        self.storage = storage
        self.name = name
        # Another port to advertise in metadata (e.g. a relay's, so that
        # every connection after bootstrap goes through it).
        self.advertised_port = advertised_port or self.port
        # e.g. "localhost", for a TLS terminator whose certificate names it.
        self.advertised_host = advertised_host
        self.process = None
        self.starts = 0

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"tcp://{self.address}"

    @property
    def advertised_url(self):
        return f"tcp://{self.advertised_host}:{self.advertised_port}"

    def start(self, timeout=30.0):
        assert self.process is None or not self.process.alive(), "broker already running"
        if port_open(self.port):
            pytest.fail(f"port {self.port} is already in use; cannot start {self.name}")
        self.starts += 1
        log = self.run_dir / f"{self.name}-{self.port}.log"
        # Tansu also reads settings from the environment; start it without.
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
        self.process = Process(
            f"tansu {self.name}",
            [tansu_path(), "broker",
             "--listener-url", self.url,
             "--advertised-listener-url", self.advertised_url,
             "--storage-engine", self.storage],
            log, env=env)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout):
        """Ready when a Kafka ApiVersions + Metadata round trip succeeds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.process.alive():
                pytest.fail(f"tansu exited with {self.process.proc.returncode} at start\n"
                            + self.process.describe())
            try:
                kafkawire.probe(self.address, timeout=2.0)
                return
            except (OSError, kafkawire.WireError) as e:
                last = e
            time.sleep(0.2)
        pytest.fail(f"tansu not ready on {self.address} after {timeout}s ({last})\n"
                    + self.process.describe())

    def stop(self, timeout=10.0):
        if self.process is not None:
            self.process.stop(timeout)
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.process is not None and self.process.alive()

    def create_topic_cli(self, name, partitions):
        """Create a topic with Tansu's own CLI (no Kafka client involved)."""
        out = subprocess.run(
            [tansu_path(), "topic", "create", name, "--partitions", str(partitions),
             "--broker", self.url],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"tansu topic create {name}: {out.stderr}{out.stdout}"


# ------------------------------------------------------------------- proxy

def to_yaml(value, indent=0):
    """YAML for nested dicts/lists of scalars (enough for a proxy config)."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", str(k)) else json.dumps(str(k))
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    else:
        for v in value:
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}-")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}- {_scalar(v)}")
    return "\n".join(lines)


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    return json.dumps(str(v))


def _merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def proxy_config(bootstrap, port, mapping=None, max_connections=None,
                 log_level="info", extra=None):
    """The proxy's config as a dict.

    bootstrap: "host:port" or a list of them. mapping: None (no mapping
    section: every topic passes through), or e.g.
    {"virtual_partitions": 100, "physical_partitions": 10, "topics": {...}}.
    extra: nested dict merged over the result, for options tests add later.
    """
    listen = {"address": f"127.0.0.1:{port}",
              "advertised_address": f"127.0.0.1:{port}"}
    if max_connections is not None:
        listen["max_connections"] = max_connections
    config = {
        "listen": listen,
        "kafka": {
            "bootstrap_servers": [bootstrap] if isinstance(bootstrap, str) else list(bootstrap),
            "connection_timeout_ms": 10000,
            "request_timeout_ms": 30000,
            "metadata_refresh_interval_ms": 30000,
        },
        "metrics": {"enabled": False},
        "logging": {"level": log_level, "format": "text"},
    }
    if mapping is not None:
        config["mapping"] = mapping
    return _merge(config, extra or {})


class Proxy:
    """kpr-proxy started from target/release with a generated config."""

    direct = False

    def __init__(self, run_dir, config, name="proxy", config_text=None):
        """config_text: the file to run as written (config is then its
        parsed form, for the addresses); default to_yaml(config)."""
        self.run_dir = Path(run_dir)
        self.config = config
        self.config_text = config_text
        self.name = name
        self.address = config["listen"]["address"]
        self.advertised = config["listen"].get("advertised_address", self.address)
        self.port = int(self.address.rsplit(":", 1)[1])
        self.config_path = self.run_dir / f"{name}-{self.port}.yaml"
        self.log_path = self.run_dir / f"{name}-{self.port}.log"
        self.process = None

    def start(self, timeout=20.0):
        if not PROXY_BIN.exists():
            pytest.fail(f"{PROXY_BIN} missing: run cargo build --release (scripts/test does)")
        self.config_path.write_text(self.config_text or to_yaml(self.config) + "\n")
        env = dict(os.environ, RUST_BACKTRACE="1")
        self.process = Process(f"kpr-proxy {self.name}",
                               [PROXY_BIN, "--config", self.config_path],
                               self.log_path, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                pytest.fail(f"kpr-proxy exited with {self.process.proc.returncode} at start\n"
                            f"config {self.config_path}\n" + self.process.describe())
            if "Listening on" in self.process.log_text() and port_open(self.port):
                return self
            time.sleep(0.1)
        pytest.fail(f"kpr-proxy did not log 'Listening on' and open port {self.port} "
                    f"within {timeout}s\n" + self.process.describe())

    def alive(self):
        return self.process is not None and self.process.alive()

    def stop(self, timeout=10.0):
        """SIGTERM; returns (exit code, exited within timeout)."""
        if self.process is None:
            return 0, True
        return self.process.stop(timeout)

    def restart(self, timeout=10.0):
        """Stop (asserting a clean exit) and start again on the same port with
        the same config: every client connection and in-memory state is lost.
        The log file goes on (log marks taken before stay valid)."""
        code, graceful = self.stop(timeout)
        assert graceful and code == 0, f"{self.name} exited with {code} (graceful={graceful})"
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.start()

    @property
    def metrics_address(self):
        m = self.config.get("metrics") or {}
        return m.get("address") if m.get("enabled") else None

    def metrics(self, timeout=5.0):
        """{name: value} from the Prometheus text at /metrics (metrics must
        be enabled: start_proxy(metrics=True))."""
        assert self.metrics_address, f"{self.name}: metrics not enabled in its config"
        return scrape_metrics(self.metrics_address, timeout)

    def log_mark(self):
        """A position in the log; wait_for_log(since=mark) looks after it."""
        return len(self.process.log_text())

    def log_since(self, mark=0):
        return self.process.log_text()[mark:]

    def wait_for_log(self, pattern, since=0, timeout=10.0):
        """The first line after `since` matching the regex (case-insensitive)."""
        rx = re.compile(pattern, re.IGNORECASE)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_since(since).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(f"no log line matching /{pattern}/ within {timeout}s; "
                                     f"log after the mark:\n{self.log_since(since)[-4000:]}")
            time.sleep(0.1)

    def describe(self):
        return self.process.describe() if self.process else f"{self.name}: not started"


def scrape_metrics(address, timeout=5.0):
    """{metric name (with labels, if any): float} from http://address/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as r:
        assert r.status == 200, f"GET /metrics: HTTP {r.status}"
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


class DirectProxy:
    """KPR_E2E_DIRECT=1: the broker itself stands in for the proxy."""

    direct = True

    def __init__(self, broker):
        self.broker = broker
        self.config = None

    @property
    def address(self):
        return self.broker.address

    advertised = address

    @property
    def port(self):
        return self.broker.port

    def alive(self):
        return True

    def stop(self, timeout=10.0):
        return 0, True

    def log_mark(self):
        return 0

    def log_since(self, mark=0):
        return ""

    def restart(self, timeout=10.0):
        return self

    metrics_address = None

    def metrics(self, timeout=5.0):
        pytest.fail("KPR_E2E_DIRECT=1: no proxy, no metrics")

    def wait_for_log(self, pattern, since=0, timeout=10.0):
        return f"(KPR_E2E_DIRECT: log check /{pattern}/ skipped)"

    def describe(self):
        return "direct mode: no proxy"
