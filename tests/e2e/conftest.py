"""Fixtures for the kpr-proxy end-to-end tests.

    broker          a fresh Tansu broker (memory storage) per test module
    broker_factory  more brokers for one test, e.g. with sqlite storage
    start_proxy     start kpr-proxy in front of a broker with a given config
    proxy           kpr-proxy with the default config in front of `broker`
    broker_behind_relay  (upstream, relay): a fresh broker reached through a
                    relay.Relay, to make the broker's answers misbehave
    topic           a factory creating uniquely named topics on `broker`

Missing tools fail the test with a hint to run scripts/install-deps; nothing
here skips a test.
"""

import shutil
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Broker, DirectProxy, Proxy, proxy_config  # noqa: E402
from relay import Relay  # noqa: E402

try:
    import clients  # noqa: E402,F401  (imports confluent_kafka and kafka)
except ImportError as e:  # pragma: no cover - depends on the machine
    raise pytest.UsageError(f"{e}: {harness.INSTALL_HINT}") from e


@pytest.fixture(scope="session", autouse=True)
def required_tools():
    """Every test fails (never skips) when a tool is missing."""
    if shutil.which("kcat") is None:
        pytest.fail(f"kcat not found: {harness.INSTALL_HINT}")
    harness.tansu_path()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _failed(request):
    return any(getattr(request.node, f"report_{w}", None) is not None
               and getattr(request.node, f"report_{w}").failed
               for w in ("setup", "call"))


@pytest.fixture(scope="module")
def module_run_dir(tmp_path_factory, request):
    return tmp_path_factory.mktemp(request.module.__name__)


@pytest.fixture(scope="module")
def broker(module_run_dir):
    b = Broker(module_run_dir)
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture
def broker_factory(tmp_path, request):
    """broker_factory(storage=...) -> a started Broker, stopped at teardown.

    storage="sqlite" means a fresh sqlite file in the test's directory, so
    the broker can be stopped and started again with its data.
    """
    started = []

    def make(storage="memory://tansu/", name=None, advertised_port=None, advertised_host="127.0.0.1"):
        if storage == "sqlite":
            # Tansu reads sqlite://X relative to its cwd: an absolute path
            # needs sqlite:// + "/abs/path" (four slashes in all).
            storage = f"sqlite:///{tmp_path / f'tansu-{len(started)}.db'}"
            assert storage.startswith("sqlite:////")
        b = Broker(tmp_path, storage=storage, name=name or f"broker{len(started)}",
                   advertised_port=advertised_port, advertised_host=advertised_host)
        started.append(b)
        return b.start()

    try:
        yield make
    finally:
        if _failed(request):
            for b in started:
                if b.process:
                    print(b.process.describe())
        for b in started:
            b.stop()


@pytest.fixture
def start_proxy(broker, tmp_path, request):
    """start_proxy(mapping=None, max_connections=None, upstream=broker, ...)

    Starts kpr-proxy on a free port; at teardown sends SIGTERM and asserts it
    exits with status 0 within 10 s. Under KPR_E2E_DIRECT=1 returns the
    upstream broker itself. metrics=True serves /metrics on another free
    port (proxy.metrics() reads it). upstream may also be a "host:port"
    string (e.g. a relay in front of the broker).
    """
    started = []

    def start(mapping=None, max_connections=None, upstream=None, log_level="info",
              extra=None, name=None, metrics=False):
        upstream = upstream or broker
        if harness.DIRECT:
            return DirectProxy(upstream)
        if metrics:
            extra = harness._merge({"metrics": {
                "enabled": True, "address": f"127.0.0.1:{harness.free_port()}"}}, extra or {})
        bootstrap = upstream if isinstance(upstream, str) else upstream.address
        config = proxy_config(bootstrap, harness.free_port(), mapping=mapping,
                              max_connections=max_connections, log_level=log_level,
                              extra=extra)
        p = Proxy(tmp_path, config, name=name or f"proxy{len(started)}")
        started.append(p)
        return p.start()

    yield start

    problems = []
    for p in started:
        code, graceful = p.stop(10.0)
        problem = (None if graceful and code == 0 else
                   f"{p.name} exited with status {code} after SIGTERM" if graceful else
                   f"{p.name} did not exit within 10 s of SIGTERM (killed)")
        if problem or _failed(request):
            print(f"{problem or ''}\n{p.describe()}")
        if problem:
            problems.append(problem)
    if problems and not _failed(request):
        pytest.fail("; ".join(problems))


@pytest.fixture
def proxy(start_proxy):
    return start_proxy()


@pytest.fixture
def broker_behind_relay(broker_factory, start_proxy):
    """(upstream, relay): a fresh broker that advertises the relay's port,
    so every connection of a proxy started with upstream=relay.address goes
    through the relay, which the test can make misbehave (relay.py).
    upstream.address reaches the broker directly.

    It asks for start_proxy only so that pytest tears it down first: the
    relay closes before the proxies get SIGTERM, so none waits out its
    drain on answers the relay still holds.
    """
    relay_port = harness.free_port()
    upstream = broker_factory(advertised_port=relay_port)
    relay = Relay(upstream.port, port=relay_port)
    try:
        yield upstream, relay
    finally:
        relay.close()


@pytest.fixture
def topic(broker):
    """topic(partitions, prefix="t") -> name of a new topic on `broker`."""

    def make(partitions, prefix="t"):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        clients.create_topic(broker.address, name, partitions)
        return name

    return make
