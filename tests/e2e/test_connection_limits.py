"""listen.max_connections: connections above the limit are closed by the
proxy (the client reads EOF), the ones within it keep being served, a freed
slot can be used again, and the proxy logs the refusals."""

import contextlib
import time

import kafkawire

LIMIT = 5
OPENED = 8


def test_connections_above_max_are_closed(start_proxy):
    proxy = start_proxy(max_connections=LIMIT)
    mark = proxy.log_mark()
    with contextlib.ExitStack() as stack:
        socks = []
        for i in range(OPENED):
            s = stack.enter_context(kafkawire.connect(proxy.address, timeout=5))
            # Each connection is proven accepted (answered) before the next
            # opens, so "the first LIMIT" is well defined.
            if i < LIMIT:
                error, _ = kafkawire.api_versions(s, 0, correlation_id=100 + i)
                assert error == 0
            socks.append(s)

        for i, s in enumerate(socks[LIMIT:], start=LIMIT):
            assert kafkawire.wait_closed(s, timeout=5), (
                f"connection {i + 1} of {OPENED} (limit {LIMIT}) was not closed by the proxy")

        for i, s in enumerate(socks[:LIMIT]):
            error, keys = kafkawire.api_versions(s, 1, correlation_id=200 + i)
            assert error == 0 and kafkawire.API_METADATA in keys, f"allowed connection {i + 1}"
        brokers, _, _ = kafkawire.metadata_v1(socks[0], None, correlation_id=300)
        assert {f"{h}:{p}" for _, h, p, _ in brokers} == {proxy.advertised}

        line = proxy.wait_for_log(r"max.?connections|limit|too many",
                                  since=mark, timeout=5)
        print(f"proxy log: {line}")

        # Closing an allowed connection frees its slot.
        socks[0].close()
        deadline = time.monotonic() + 10
        while True:
            s = stack.enter_context(kafkawire.connect(proxy.address, timeout=5))
            try:
                error, _ = kafkawire.api_versions(s, 0, correlation_id=400)
                assert error == 0
                break
            except (OSError, kafkawire.WireError):
                assert time.monotonic() < deadline, "a freed connection slot was not reused"
                time.sleep(0.2)
