"""The metrics endpoint answers as soon as the proxy says it is listening:
an operator's health check (or a test) that scrapes right after
`Listening on` must not be refused while the proxy still learns the
cluster."""

import urllib.error
import urllib.request


def test_metrics_are_served_before_the_proxy_listens(start_proxy):
    proxy = start_proxy(metrics=True)
    # One attempt, no retry: start_proxy returned on `Listening on`.
    values = proxy.metrics()
    # The harness's own port probe may still count as a connection here.
    assert "kafka_proxy_connections_active" in values, values

    log = proxy.log_since(0)
    served, listening = log.find("Metrics on http://"), log.find("Listening on")
    assert served != -1 and listening != -1, log[-2000:]
    assert served < listening, f"metrics endpoint bound after the listener:\n{log[-2000:]}"

    try:
        urllib.request.urlopen(f"http://{proxy.metrics_address}/other", timeout=5)
        raise AssertionError("GET /other answered 200")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
