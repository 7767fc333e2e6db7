"""The metrics endpoint answers as soon as the proxy says it is listening:
an operator's health check (or a test) that scrapes right after
`Listening on` must not be refused while the proxy still learns the
cluster."""

import re
import urllib.error
import urllib.request

import clients


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


def test_requests_are_counted_by_api_type(start_proxy, topic):
    """kafka_proxy_requests_total is "Requests by API type" (the user's
    guide): one series per API, labelled with Kafka's API name."""
    proxy = start_proxy(metrics=True)
    name = topic(3)
    before = proxy.metrics()
    records = clients.make_records([0, 1, 2], 6, tag="by-api")
    clients.produce_confluent(proxy.address, name, records)
    clients.check_records(records, clients.consume_confluent(proxy.address, name, [0, 1, 2], len(records)))
    values = proxy.metrics()
    series = {k: v for k, v in values.items() if k.startswith("kafka_proxy_requests_total")}
    assert "kafka_proxy_requests_total" not in series, f"an unlabelled series: {series}"

    def grown(api):
        key = f'kafka_proxy_requests_total{{api="{api}"}}'
        return values.get(key, 0) - before.get(key, 0)

    for api in ("ApiVersions", "Metadata", "Produce", "Fetch"):
        assert grown(api) >= 1, f"{api} not counted: {series}"
    # The clients' connections carry nothing else here: every request
    # is under a Kafka API name.
    assert all(re.fullmatch(r'kafka_proxy_requests_total\{api="[A-Za-z]+"\}', k) for k in series), series
