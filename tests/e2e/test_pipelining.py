"""A client may send several requests before reading any response (Kafka
clients pipeline). The proxy must answer each, in request order, with the
request's correlation id."""

import kafkawire
from kafkawire import (api_versions_request, metadata_v1_request,
                       parse_api_versions_response, parse_metadata_v1_response,
                       read_frame, response_correlation_id)


def test_pipelined_requests_answered_in_order(proxy, topic):
    name = topic(3)
    requests = [  # (correlation id, kind, version, frame)
        (7001, "api_versions", 0, api_versions_request(0, 7001)),
        (7002, "api_versions", 1, api_versions_request(1, 7002)),
        (7003, "metadata", 1, metadata_v1_request(7003, [name])),
        (7004, "api_versions", 2, api_versions_request(2, 7004)),
        (7005, "api_versions", 3, api_versions_request(3, 7005)),
        (7006, "metadata", 1, metadata_v1_request(7006, None)),
    ]
    with kafkawire.connect(proxy.address, timeout=15) as sock:
        # One write holding every request, so they arrive back to back.
        sock.sendall(b"".join(frame for _, _, _, frame in requests))
        responses = []
        for corr, *_ in requests:
            payload = read_frame(sock)
            assert payload is not None, (
                f"connection closed after {len(responses)} of {len(requests)} responses")
            responses.append(payload)

    got = [response_correlation_id(p) for p in responses]
    assert got == [corr for corr, *_ in requests], "responses out of request order"

    for (corr, kind, version, _), payload in zip(requests, responses):
        if kind == "api_versions":
            _, error, keys = parse_api_versions_response(version, payload)
            assert error == 0, f"ApiVersions v{version}: error {error}"
            assert kafkawire.API_METADATA in keys and kafkawire.API_API_VERSIONS in keys
        else:
            _, brokers, _, topics = parse_metadata_v1_response(payload)
            assert brokers, "Metadata lists no broker"
            assert {f"{host}:{port}" for _, host, port, _ in brokers} == {proxy.advertised}
            assert name in topics
            assert topics[name]["error"] == 0
            assert sorted(topics[name]["partitions"]) == [0, 1, 2]


def test_many_pipelined_requests(proxy):
    """200 ApiVersions requests in one write: none lost, none reordered."""
    n = 200
    with kafkawire.connect(proxy.address, timeout=15) as sock:
        sock.sendall(b"".join(api_versions_request(i % 3, 10_000 + i) for i in range(n)))
        for i in range(n):
            payload = read_frame(sock)
            assert payload is not None, f"connection closed after {i} of {n} responses"
            corr, error, _ = parse_api_versions_response(i % 3, payload)
            assert (corr, error) == (10_000 + i, 0)


def test_pipelined_frames_near_the_size_limit(start_proxy):
    """Many requests close to listen.max_frame_bytes in one burst: the proxy
    bounds what it buffers per client, and must still read everything the
    socket holds afterwards (it is edge-triggered: bytes already waiting are
    not signalled again)."""
    limit = 64 * 1024
    proxy = start_proxy(extra={"listen": {"max_frame_bytes": limit}})
    n = 40
    # ApiVersions is answered by the proxy without reading its body, so
    # padding makes a large, valid request.
    frames = [kafkawire.request_frame(18, 0, 20_000 + i, body=b"\0" * (limit - 100)) for i in range(n)]
    with kafkawire.connect(proxy.address, timeout=15) as sock:
        sock.sendall(b"".join(frames))
        for i in range(n):
            payload = read_frame(sock)
            assert payload is not None, f"connection closed after {i} of {n} responses"
            corr, error, _ = parse_api_versions_response(0, payload)
            assert (corr, error) == (20_000 + i, 0)
