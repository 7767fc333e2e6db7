"""Positions in a virtual partition: beginning, end, by timestamp, explicit.

20 virtual over 4 physical; ten rounds, each writing one record to every VP
with the round's timestamp (T0 + round seconds), one record per batch. A
VP's offsets are the physical offsets of its records; ListOffsets answers
from the physical partition (design: earliest, latest and by-timestamp come
from the PP), so what a client must see is:

- earliest: 0 (the physical log start); reading from it gives round 0;
- latest: the physical high watermark; a consumer at the end gets exactly
  the next record produced to its VP;
- by timestamp T0 + 5 s: an offset after the VP's round-4 record and at most
  its round-5 record (the PP's first record at or after T0 + 5 s, which may
  be a sibling's), the same as the physical partition's answer; reading from
  it gives rounds 5..9 of this VP, nothing else;
- an explicit offset: of its own record: from that record on; of a
  sibling's record: from the VP's next record on.

For confluent-kafka, kafka-python and kcat (-o beginning / end / N /
s@timestamp).

Tansu differences: with memory storage ListOffsets(latest) is the last
batch's base offset + 1, a Fetch inside a batch starts at the next batch,
and ListOffsets by timestamp always answers 0; one record per batch fixes
the first two, and the timestamp tests use sqlite storage, which looks
timestamps up (but answers 0, not -1, past the last timestamp: the proxy's
answer is compared with the broker's there).
"""

import time
import uuid
from collections import defaultdict

import kafka
import kafka.structs
import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

import clients
import virtual

V, P = 20, 4
ROUNDS = 10
CHECK_VPS = (0, 5, 10, 19)
SINGLE = {"batch.num.messages": 1, "linger.ms": 0}


def make_layout(upstream, start_proxy):
    proxy = start_proxy(upstream=upstream, mapping=virtual.mapping(V, P))
    name = f"vp-offsets-{uuid.uuid4().hex[:8]}"
    clients.create_topic(upstream.address, name, P)
    t0 = (int(time.time()) - 3600) * 1000       # an hour ago, whole seconds
    own = defaultdict(list)                      # vp -> [offset of round i]
    for r in range(ROUNDS):
        recs = [(vp, None, f"o|{vp}|{r}".encode(), []) for vp in range(V)]
        reports = produce_with_timestamp(proxy.address, name, recs, t0 + r * 1000)
        for (vp, *_), (p, off) in zip(recs, reports):
            own[vp].append(off)
    high = {p: ROUNDS * V // P for p in range(P)}
    return proxy, name, t0, own, high


@pytest.fixture
def layout(broker, start_proxy):
    """Memory storage: earliest, latest, explicit offsets."""
    return make_layout(broker, start_proxy)


@pytest.fixture
def timed_layout(broker_factory, start_proxy):
    """sqlite storage: timestamps looked up. Also returns the broker."""
    upstream = broker_factory("sqlite")
    return make_layout(upstream, start_proxy) + (upstream,)


def produce_with_timestamp(bootstrap, name, recs, ts):
    from confluent_kafka import Producer
    reports = [None] * len(recs)
    producer = Producer(clients.confluent_conf(bootstrap, **SINGLE))
    for i, (vp, k, v, _) in enumerate(recs):
        producer.produce(name, value=v, key=k, partition=vp, timestamp=ts,
                         on_delivery=lambda err, msg, i=i: reports.__setitem__(
                             i, (msg.partition(), msg.offset()) if err is None else err))
    assert producer.flush(30) == 0
    assert all(isinstance(r, tuple) for r in reports), reports
    return reports


def sibling_offset(own, vp, near_round):
    """A sibling's record between two of VP vp's, and the round of vp's next
    record: (round, offset). Which of a PP's five VPs lands first in a round
    is up to the producer, so the gap after near_round may be empty; rounds
    are flushed one after another, so a VP cannot be both last and first in
    every round, and some nearby gap holds a sibling's record."""
    for r in sorted(range(ROUNDS - 1), key=lambda r: abs(r - near_round)):
        if own[vp][r] + 1 < own[vp][r + 1]:
            return r + 1, own[vp][r] + 1
    raise AssertionError(f"VP {vp}: no sibling's record between its own at {own[vp]}")


def check_seeks(read, own, vp, own_round, near_round):
    """read(offset) gives VP vp's records from offset (None: the beginning).
    From the beginning: every round; from its own record of own_round: that
    round on; from a sibling's record near near_round: the VP's next round
    on."""
    assert rounds_of(read(None), vp) == list(range(ROUNDS)), f"VP {vp} from the beginning"
    got = read(own[vp][own_round])
    assert rounds_of(got, vp) == list(range(own_round, ROUNDS)), f"VP {vp} from its round {own_round}"
    next_round, sibling = sibling_offset(own, vp, near_round)
    assert rounds_of(read(sibling), vp) == list(range(next_round, ROUNDS)), (
        f"VP {vp} from {sibling} (a sibling's record before its round {next_round})")


def rounds_of(msgs, vp):
    """Rounds of the records read from VP vp; a record of another VP shows
    as "VP<v>:<round>" so that the comparison fails and says what leaked."""
    out = []
    for m in msgs:
        _, v, r = m.value.decode().split("|")
        out.append(int(r) if r.isdigit() and int(v) == vp else f"VP{v}:{r}")
    return out


def test_confluent_list_offsets_and_seek(layout):
    proxy, name, t0, own, high = layout
    consumer = Consumer(clients.confluent_conf(proxy.address, **{"group.id": "kpr-e2e-offsets"}))
    try:
        for vp in CHECK_VPS:
            low, hi = consumer.get_watermark_offsets(TopicPartition(name, vp), timeout=10,
                                                     cached=False)
            assert (low, hi) == (0, high[vp % P]), f"VP {vp}: ListOffsets earliest/latest {low, hi}"
    finally:
        consumer.close()

    for vp in CHECK_VPS:
        check_seeks(lambda offset: virtual.read_vp_confluent(
            proxy.address, name, vp, offset=OFFSET_BEGINNING if offset is None else offset),
            own, vp, own_round=3, near_round=3)


def by_timestamp(address, name, vps, ts):
    consumer = Consumer(clients.confluent_conf(address, **{"group.id": "kpr-e2e-times"}))
    try:
        return {tp.partition: tp.offset for tp in consumer.offsets_for_times(
            [TopicPartition(name, vp, ts) for vp in vps], timeout=10)}
    finally:
        consumer.close()


def test_offsets_for_times(timed_layout):
    """confluent-kafka and kafka-python; the proxy's answers equal the
    physical partition's, and fall between the VP's rounds 4 and 5."""
    proxy, name, t0, own, high, upstream = timed_layout
    for ts in (t0 + 5000, t0 + 4500):
        via = by_timestamp(proxy.address, name, CHECK_VPS, ts)
        direct = by_timestamp(upstream.address, name, range(P), ts)
        for vp in CHECK_VPS:
            assert via[vp] == direct[vp % P], (
                f"VP {vp} at T0+{ts - t0} ms: proxy {via[vp]}, physical {vp % P} {direct[vp % P]}")
            assert own[vp][4] < via[vp] <= own[vp][5], (
                f"VP {vp}: offsets_for_times(T0+{ts - t0} ms) = {via[vp]}; its round 4 and 5 "
                f"records are at {own[vp][4]} and {own[vp][5]}")
    past = by_timestamp(proxy.address, name, CHECK_VPS, t0 + 60000)
    direct = by_timestamp(upstream.address, name, range(P), t0 + 60000)
    assert past == {vp: direct[vp % P] for vp in CHECK_VPS}, (past, direct)

    consumer = kafka.KafkaConsumer(bootstrap_servers=[proxy.address], group_id=None,
                                   enable_auto_commit=False, request_timeout_ms=30000)
    try:
        tps = [kafka.structs.TopicPartition(name, vp) for vp in CHECK_VPS]
        times = consumer.offsets_for_times({tp: t0 + 5000 for tp in tps})
        for tp in tps:
            vp = tp.partition
            assert times[tp] is not None and own[vp][4] < times[tp].offset <= own[vp][5], (
                f"kafka-python VP {vp}: offsets_for_times {times[tp]}; rounds 4, 5 at {own[vp][4:6]}")
    finally:
        consumer.close()


def test_read_from_timestamp(timed_layout):
    """Reading a VP from the offset for T0 + 7 s (confluent-kafka; kcat
    -o s@): rounds 7..9 of that VP."""
    proxy, name, t0, own, high, upstream = timed_layout
    at7 = by_timestamp(proxy.address, name, CHECK_VPS, t0 + 7000)
    problems = []
    for vp in CHECK_VPS:
        got = rounds_of(virtual.read_vp_confluent(proxy.address, name, vp, offset=at7[vp]), vp)
        if got != list(range(7, ROUNDS)):
            problems.append(f"confluent-kafka VP {vp} from {at7[vp]}: rounds {got}")
        got = rounds_of(virtual.read_vp_kcat(proxy.address, name, vp, offset=f"s@{t0 + 7000}"), vp)
        if got != list(range(7, ROUNDS)):
            problems.append(f"kcat VP {vp} -o s@T0+7s: rounds {got}")
    assert not problems, "\n".join(problems)


def test_confluent_at_end_gets_only_new_record(layout):
    proxy, name, t0, own, high = layout
    vp = 13
    consumer = Consumer(clients.confluent_conf(proxy.address, **{
        "group.id": "kpr-e2e-end", "fetch.wait.max.ms": 100}))
    try:
        consumer.assign([TopicPartition(name, vp, OFFSET_END)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:   # let it settle at the end
            assert not [m for m in consumer.consume(100, 0.2) if m.error() is None]
        produce_with_timestamp(proxy.address, name, [(vp + 4, None, b"o|17|new", [])], t0 + 99000)
        produce_with_timestamp(proxy.address, name, [(vp, None, b"o|13|new", [])], t0 + 99000)
        got = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(got) < 1:
            got += [m.value() for m in consumer.consume(100, 0.2) if m.error() is None]
        for _ in range(5):
            got += [m.value() for m in consumer.consume(100, 0.2) if m.error() is None]
        assert got == [b"o|13|new"], f"VP {vp} from the end: {got}"
    finally:
        consumer.close()


def test_kafka_python_offsets_and_seek(layout):
    proxy, name, t0, own, high = layout
    consumer = kafka.KafkaConsumer(bootstrap_servers=[proxy.address], group_id=None,
                                   enable_auto_commit=False, request_timeout_ms=30000)
    try:
        tps = [kafka.structs.TopicPartition(name, vp) for vp in CHECK_VPS]
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        for tp in tps:
            vp = tp.partition
            assert begin[tp] == 0, f"VP {vp}: beginning {begin[tp]}"
            assert end[tp] == high[vp % P], f"VP {vp}: end {end[tp]}, physical high {high[vp % P]}"
    finally:
        consumer.close()
    for tp in tps:
        vp = tp.partition
        check_seeks(lambda offset: virtual.read_vp_kafka_python(proxy.address, name, vp, offset=offset),
                    own, vp, own_round=5, near_round=3)


def test_kcat_offsets(layout):
    proxy, name, t0, own, high = layout
    for vp in CHECK_VPS:
        assert virtual.read_vp_kcat(proxy.address, name, vp, offset="end") == []
        check_seeks(lambda offset: virtual.read_vp_kcat(
            proxy.address, name, vp, offset="beginning" if offset is None else str(offset)),
            own, vp, own_round=6, near_round=5)
