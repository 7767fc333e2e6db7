"""SIGTERM while the broker is silent: the proxy exits 0 within the
shutdown grace (listen.shutdown_grace, 10 s, man page SIGNALS) plus a
little, not after kafka.request_timeout_ms (30 s here).

The relay (relay.py hold_responses) keeps every broker answer from the
proxy, including the fetches of the producer-id topic's reader thread and
the look-up threads' requests: the threads the proxy joins at shutdown are
then blocked in a read that only the request timeout would end.
"""

import socket
import time
import uuid

import clients
import kafkawire
import virtual

# listen.shutdown_grace default (man page SIGNALS) plus 2 s of slack.
EXIT_WITHIN = 12.0


def silent_broker_proxy(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    name = f"sd-{uuid.uuid4().hex[:8]}"
    clients.create_topic(upstream.address, name, 2)
    # A remapping rule: the proxy then runs the producer-id topic reader.
    proxy = start_proxy(mapping=virtual.mapping(4, 2), upstream=relay.address)
    proxy.wait_for_log(r"producer-id", timeout=20)
    return relay, proxy


def hold_until_held(relay, timeout=10.0):
    """Hold every answer; return once one is held (a thread is waiting)."""
    before = relay.held_count()
    relay.hold_responses()
    deadline = time.monotonic() + timeout
    while relay.held_count() == before:
        assert time.monotonic() < deadline, "no request reached the silent broker"
        time.sleep(0.05)


def timed_stop(proxy):
    started = time.monotonic()
    code, exited = proxy.stop(timeout=40)
    return code, exited, time.monotonic() - started


def test_sigterm_with_a_silent_broker_exits_promptly(broker_behind_relay, start_proxy):
    relay, proxy = silent_broker_proxy(broker_behind_relay, start_proxy)
    hold_until_held(relay)
    time.sleep(1.0)  # the reader's next fetch is in the broker's hands too
    code, exited, took = timed_stop(proxy)
    print(f"idle proxy, silent broker: exit {code} after {took:.1f} s")
    assert exited and code == 0, f"exit {code} (exited={exited})\n{proxy.describe()}"
    assert took < EXIT_WITHIN, f"SIGTERM took {took:.1f} s to exit (bound {EXIT_WITHIN} s)\n{proxy.describe()}"


def test_sigterm_with_a_lookup_waiting_on_a_silent_broker(broker_behind_relay, start_proxy):
    """A client's Metadata for a topic the proxy has not seen waits on a
    look-up thread the broker never answers: the in-flight request gets
    the grace, then the proxy exits."""
    relay, proxy = silent_broker_proxy(broker_behind_relay, start_proxy)
    relay.hold_responses()
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        frame = kafkawire.metadata_v1_request(7, topics=[f"unseen-{uuid.uuid4().hex[:8]}"])
        client.sendall(frame)
        time.sleep(1.5)  # the look-up is asked and held
        code, exited, took = timed_stop(proxy)
    finally:
        client.close()
    print(f"look-up in flight, silent broker: exit {code} after {took:.1f} s")
    assert exited and code == 0, f"exit {code} (exited={exited})\n{proxy.describe()}"
    assert took < EXIT_WITHIN, f"SIGTERM took {took:.1f} s to exit (bound {EXIT_WITHIN} s)\n{proxy.describe()}"
