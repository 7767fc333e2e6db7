"""Health endpoints beside /metrics (issue 12): /livez answers 200 while the
event loop runs; /readyz answers 200 while the proxy reaches the cluster
and its metadata is fresh, else 503 with a one-line reason. Checked with
the broker up, stopped (readyz 503 within the bound, livez still 200) and
back (readyz 200 again), as a load balancer or Kubernetes probe sees it.
"""

import time
import urllib.error
import urllib.request

# metadata_refresh_interval_ms of this test: the proxy notices a lost
# cluster at its next refresh, so /readyz turns 503 within about one
# interval plus a failed connect (refused at once on 127.0.0.1).
REFRESH_MS = 1000
BOUND = 3 * REFRESH_MS / 1000 + 5


def get(address, path, timeout=5.0):
    """(HTTP status, body) of GET http://address/path."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_status(address, path, want, timeout):
    """The (status, body, seconds waited) once GET path answers `want`."""
    started = time.monotonic()
    while True:
        status, body = get(address, path)
        waited = time.monotonic() - started
        if status == want:
            return status, body, waited
        assert waited < timeout, f"GET {path}: {status} {body!r}, not {want}, after {waited:.1f}s"
        time.sleep(0.2)


def test_livez_and_readyz_follow_the_broker(broker_factory, start_proxy):
    upstream = broker_factory("sqlite")
    proxy = start_proxy(upstream=upstream, metrics=True,
                        extra={"kafka": {"metadata_refresh_interval_ms": REFRESH_MS}})
    metrics = proxy.metrics_address

    assert get(metrics, "/livez")[0] == 200, get(metrics, "/livez")
    status, body = get(metrics, "/readyz")
    assert status == 200, (status, body)
    print(f"broker up: /livez 200, /readyz 200 {body.strip()!r}")

    upstream.stop()
    status, body, waited = wait_status(metrics, "/readyz", 503, BOUND)
    assert body.strip() and "\n" not in body.strip(), f"one-line reason expected: {body!r}"
    print(f"broker stopped: /readyz 503 after {waited:.1f}s: {body.strip()!r}")
    # The process still serves: alive, not ready.
    status, body = get(metrics, "/livez")
    assert status == 200, (status, body)
    assert proxy.alive()

    upstream.start()
    _, body, waited = wait_status(metrics, "/readyz", 200, BOUND)
    print(f"broker back: /readyz 200 after {waited:.1f}s: {body.strip()!r}")
    assert get(metrics, "/livez")[0] == 200


def test_unknown_path_names_the_endpoints(start_proxy):
    proxy = start_proxy(metrics=True)
    status, body = get(proxy.metrics_address, "/healthz")
    assert status == 404
    for path in ("/metrics", "/livez", "/readyz"):
        assert path in body, body
