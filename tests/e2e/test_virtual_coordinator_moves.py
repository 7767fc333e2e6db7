"""Derived groups' coordinators are looked up again when they move (issue 8,
finding 6).

Committed offsets of k >= 1 virtual partitions live in derived groups
(GROUP.kpr-vp-k<k>), whose coordinators only the proxy knows: clients never
ask for them. When a coordinator moves (rolling restart, leader change of
__consumer_offsets), the old node answers NOT_COORDINATOR; Kafka's own
clients then mark the coordinator unknown, look it up again and retry
(ConsumerCoordinator / AbstractCoordinator.markCoordinatorUnknown on
NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE; COORDINATOR_LOAD_IN_PROGRESS
is retried as it is; a failed connection marks it unknown too). The proxy
must do the same for the derived groups, a few times with a short backoff,
else every k >= 1 commit fails and OffsetFetch, which lifts a derived
group's error to the whole group, returns no committed offsets at all.

A relay between proxy and broker plays the moved coordinator: it answers
the derived group's requests with the error code (sending the request on to
the broker under a decoy name, so the real group is not touched by the
failed attempt), until the proxy asks FindCoordinator for that group again
(stale coordinator), or a given number of times (loading), or closes the
connection instead of answering (dead node).
"""

import contextlib
import uuid

import pytest

import clients
import kafkawire
import virtual

V, P = 20, 4
COMMIT, FETCH = kafkawire.API_OFFSET_COMMIT, kafkawire.API_OFFSET_FETCH


@pytest.fixture
def relayed(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P))
    name = f"vp-coord-{relay.port}"
    clients.create_topic(upstream.address, name, P)
    yield proxy, relay, name


def commit(sock, corr, group, name, offsets):
    sock.sendall(kafkawire.offset_commit_v2_request(corr, group, {name: offsets}))
    payload = kafkawire.read_frame(sock)
    assert payload is not None, "the proxy closed the connection instead of answering OffsetCommit"
    got_corr, codes = kafkawire.parse_offset_commit_v2_response(payload)
    assert got_corr == corr
    return codes


def fetch(sock, corr, group, name, partitions):
    sock.sendall(kafkawire.offset_fetch_v3_request(corr, group, {name: partitions}))
    payload = kafkawire.read_frame(sock)
    assert payload is not None, "the proxy closed the connection instead of answering OffsetFetch"
    got_corr, group_error, offsets = kafkawire.parse_offset_fetch_v3_response(payload)
    assert got_corr == corr
    return group_error, offsets


# VP 0 is k = 0 (the group itself), VPs 5 and 9 are k = 1 and k = 2 of
# physical partition 1.
FIRST = {0: 10, 5: 20, 9: 30}
SECOND = {0: 11, 5: 21, 9: 31}


FAULTS = ["stale", "loading", "not-available", "closed"]


def arm(relay, fault, apis, derived):
    """Make the relay play a coordinator that moved (stale), is loading,
    is not available, or whose connection dies, for `derived`."""
    if fault == "stale":
        relay.stale_coordinator(apis, derived)
    elif fault == "loading":
        relay.answer_error(apis, kafkawire.COORDINATOR_LOAD_IN_PROGRESS, derived, count=2)
    elif fault == "not-available":
        relay.answer_error(apis, kafkawire.COORDINATOR_NOT_AVAILABLE, derived, count=1)
    else:
        relay.lose_next_matching(apis, derived)


@contextlib.contextmanager
def first_committed(proxy, name):
    """A new group with FIRST committed through the proxy on a fresh
    connection: the commit teaches the proxy where the derived groups live.
    Yields (socket, group, its k = 1 derived group as bytes)."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    with kafkawire.connect(proxy.address, timeout=20.0) as s:
        kafkawire.api_versions(s, 0, 1)
        assert commit(s, 2, group, name, FIRST) == {(name, v): 0 for v in FIRST}
        yield s, group, f"{group}.kpr-vp-k1".encode()


def check_looked_up_again(relay, fault, derived, before):
    assert relay.injected or relay.lost, "the relay never played the moved coordinator"
    if fault != "loading":  # loading: same coordinator, later
        assert relay.find_coordinator_requests(derived) > before, (
            "the proxy retried without looking the coordinator up again")


@pytest.mark.parametrize("fault", FAULTS)
def test_derived_group_commit_survives_a_coordinator_move(relayed, fault):
    proxy, relay, name = relayed
    with first_committed(proxy, name) as (s, group, derived):
        found_before = relay.find_coordinator_requests(derived)
        arm(relay, fault, [COMMIT], derived)
        codes = commit(s, 3, group, name, SECOND)
        assert codes == {(name, v): 0 for v in SECOND}, (
            f"{fault}: the commit after the derived group's coordinator moved answered {codes} "
            f"(relay changed {relay.injected}, lost {relay.lost})")
        check_looked_up_again(relay, fault, derived, found_before)
    # What the retried commit wrote (the failed attempt went to a decoy group).
    assert clients.committed(proxy.address, group, name, list(SECOND), timeout=20.0) == SECOND


@pytest.mark.parametrize("fault", FAULTS)
def test_committed_offsets_survive_a_coordinator_move(relayed, fault):
    proxy, relay, name = relayed
    with first_committed(proxy, name) as (s, group, derived):
        # The proxy knows where the derived groups live; now they move.
        assert fetch(s, 3, group, name, list(FIRST)) == (0, {(name, v): (o, 0) for v, o in FIRST.items()})
        found_before = relay.find_coordinator_requests(derived)
        arm(relay, fault, [FETCH], derived)
        # A raw OffsetFetch sees the error the client would get.
        group_error, offsets = fetch(s, 4, group, name, list(FIRST))
        assert (group_error, offsets) == (0, {(name, v): (o, 0) for v, o in FIRST.items()}), (
            f"{fault}: OffsetFetch after the derived group's coordinator moved answered group error "
            f"{group_error}, offsets {offsets} (relay changed {relay.injected}, lost {relay.lost})")
        check_looked_up_again(relay, fault, derived, found_before)
    # A joining consumer (confluent-kafka) gets every committed offset while
    # the coordinator moves again.
    arm(relay, fault, [FETCH], derived)
    assert clients.committed(proxy.address, group, name, list(FIRST), timeout=20.0) == FIRST
