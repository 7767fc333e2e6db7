"""Records produced to virtual partitions come back from exactly those
virtual partitions, with every client and every compression codec, and sit
on the broker where the design puts them.

A topic of 4 physical partitions is shown as 20 virtual ones. kcat,
kafka-python and confluent-kafka each produce, with each codec, distinct
records to every virtual partition, some with an explicit partition and some
placed by key (murmur2, the Java client's partitioner, so the test knows
where a key goes). Then each virtual partition is read alone, by each
client: it must hold exactly its own records, in production order, with
their offsets as the producer was told: nothing from a sibling on the same
physical partition, nothing lost. Read directly from the broker, every
record is on physical partition v % 4, tagged kpr.vp=v when v >= 4 and
untagged when v < 4, and every batch kept its producer's codec (the proxy
decompresses to tag and must compress again with the same codec).

Data written to the physical topic directly, bypassing the proxy, appears in
virtual partitions 0..3 (untagged records belong to k = 0), and a consumer
of the physical topic sees every record.

The VP is a property of each record (its tag), so a batch mixing VPs -- as
a mirror of the physical topic writes, or as Tansu with sqlite storage
returns on fetch (it merges stored batches) -- must still give every VP
exactly its records.
"""

import time
from collections import defaultdict

import pytest

import clients
import kafkawire
import virtual
from virtual import CODECS, HEADER, Msg

V, P = 20, 4
# Clients send a batch uncompressed when compression does not make it
# smaller; padding makes every batch compressible, so each batch's codec on
# the broker must be its producer's.
PAD = "|" + "x" * 300


def _rec(vp, key, value, headers):
    return {"vp": vp, "key": key, "value": value, "headers": list(headers), "offset": None}


def explicit_and_keyed(client, codec, headers):
    """Two records per VP for one client and codec: one sent to the VP
    (null key on odd VPs), one keyed for it and sent with no partition.
    -> (the records expected, in order; the sends: (partition or None,
    key, value, headers))."""
    batch, sends = [], []
    for vp in range(V):
        e = _rec(vp, None if vp % 2 else f"{client}-e-{vp}".encode(),
                 f"{client}|{codec}|explicit|{vp}{PAD}".encode(), headers)
        kk = virtual.key_for(vp, V, f"{client}-{codec}")
        k = _rec(vp, kk, f"{client}|{codec}|keyed|{vp}{PAD}".encode(), headers)
        batch += [e, k]
        sends += [(vp, e["key"], e["value"], headers), (None, kk, k["value"], headers)]
    return batch, sends


def produce_all(proxy_address, name):
    """Every client x every codec x every virtual partition; returns the
    records in production order (dicts: vp, key, value, headers, offset)."""
    produced = []

    def check_placement(batch, reports, who):
        for r, (p, off) in zip(batch, reports):
            assert p == r["vp"], (f"{who}: record {r['value']} meant for VP {r['vp']} "
                                  f"was delivered to partition {p}")
            r["offset"] = off

    for codec in CODECS:
        # confluent-kafka: explicit partition (null key on odd VPs) and keyed.
        batch, sends = explicit_and_keyed("ck", codec, [("app", b"ck"), ("codec", codec.encode())])
        reports = virtual.produce_confluent_full(proxy_address, name, sends,
                                                 **{"compression.type": codec})
        check_placement(batch, reports, f"confluent-kafka {codec}")
        produced += batch

        # kafka-python: the same shape.
        batch, sends = explicit_and_keyed("kp", codec, [("app", b"kp")])
        reports = virtual.produce_kafka_python_full(
            proxy_address, name, sends,
            compression_type=None if codec == "none" else codec)
        check_placement(batch, reports, f"kafka-python {codec}")
        produced += batch

        # kcat: explicit partition for 4 VPs per codec (each VP once over
        # the 5 codecs), then one keyed run over all 20 VPs. kcat prints no
        # offsets: theirs are checked against the consumers' agreement.
        ci = CODECS.index(codec)
        h = [("app", b"kcat")]
        for vp in (ci, ci + 5, ci + 10, ci + 15):
            lines = [f"kcat|{codec}|explicit|{vp}|{i}{PAD}" for i in range(3)]
            virtual.kcat_produce(proxy_address, name, lines, partition=vp, codec=codec,
                                 headers=h)
            produced += [_rec(vp, None, line.encode(), h) for line in lines]
        lines, batch = [], []
        for vp in range(V):
            kk = virtual.key_for(vp, V, f"kcat-{codec}")
            value = f"kcat|{codec}|keyed|{vp}{PAD}"
            lines.append(f"{kk.decode()}\t{value}")
            batch.append(_rec(vp, kk, value.encode(), h))
        virtual.kcat_produce(proxy_address, name, lines, codec=codec, headers=h, keyed=True)
        produced += batch
    return produced


def check_vp(who, vp, expected, got):
    """Problems (strings) with one VP's records as read by one client."""
    problems = []
    want = [(r["key"], r["value"], r["headers"]) for r in expected]
    have = [(m.key, m.value, virtual.user_headers(m.headers)) for m in got]
    foreign = [m.value for m in got if int(m.value.decode().split("|")[3]) != vp]
    if foreign:
        problems.append(f"{who} VP {vp}: {len(foreign)} records of other VPs, first {foreign[:3]}")
    if have != want:
        missing = [w[1] for w in want if w not in have]
        extra = [h[1] for h in have if h not in want]
        problems.append(f"{who} VP {vp}: expected {len(want)} records, got {len(have)}; "
                        f"missing {missing[:3]}, unexpected {extra[:3]}"
                        + ("" if missing or extra else
                           f"; same records, other order or headers: first expected {want[:2]}, got {have[:2]}"))
    offsets = [m.offset for m in got]
    if offsets != sorted(set(offsets)):
        problems.append(f"{who} VP {vp}: offsets not strictly increasing: {offsets[:20]}")
    told = {r["value"]: r["offset"] for r in expected if r["offset"] is not None}
    wrong = [(m.value, m.offset, told[m.value]) for m in got
             if m.value in told and told[m.value] != m.offset]
    if wrong:
        problems.append(f"{who} VP {vp}: offsets differ from the producer's delivery "
                        f"reports (value, read, reported): {wrong[:3]}")
    tags = {virtual.tag_of(m.headers) for m in got} - {None}
    if tags - {vp}:
        problems.append(f"{who} VP {vp}: records carry {HEADER} = {sorted(tags)}")
    return problems


def test_every_vp_every_codec_every_client(broker, start_proxy, topic):
    proxy = start_proxy(mapping=virtual.mapping(V, P), metrics=True)
    name = topic(P, prefix="vp-codecs")
    assert clients.partition_count(proxy.address, name) == V

    produced = produce_all(proxy.address, name)
    per_vp = defaultdict(list)
    for r in produced:
        per_vp[r["vp"]].append(r)
    assert sorted(per_vp) == list(range(V))

    problems = []
    reads = {}
    jobs = [(who, vp) for who in virtual.READERS for vp in range(V)]
    results = virtual.parallel(lambda who, vp: virtual.READERS[who](proxy.address, name, vp), jobs)
    for (who, vp), (got, error) in zip(jobs, results):
        if error is not None:
            problems.append(f"{who} VP {vp}: {error}")
            continue
        reads[(who, vp)] = got
        problems += check_vp(who, vp, per_vp[vp], got)
    # The three clients agree on every offset (kcat's records included).
    for vp in range(V):
        seen = {who: [(m.offset, m.value) for m in reads[(who, vp)]]
                for who in virtual.READERS if (who, vp) in reads}
        if len({tuple(s) for s in seen.values()}) > 1:
            problems.append(f"VP {vp}: clients disagree: "
                            + "; ".join(f"{w}: {s[:3]}..." for w, s in seen.items()))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])

    # On the broker: physical placement, the tag, nothing extra.
    direct = virtual.read_all_direct(broker.address, name, range(P))
    by_value = {r["value"]: r for r in produced}
    assert len(direct) == len(produced), (
        f"{len(direct)} records on the broker, {len(produced)} produced")
    for m in direct:
        r = by_value.get(m.value)
        assert r is not None, f"unknown record on the broker: {m}"
        p, k = virtual.placement(r["vp"], P)
        assert m.partition == p, f"{m.value}: on physical {m.partition}, expected {p}"
        assert virtual.tag_of(m.headers) == (r["vp"] if k else None), (
            f"{m.value} (VP {r['vp']}): headers on the broker {m.headers}")
        assert virtual.user_headers(m.headers) == r["headers"], (
            f"{m.value}: user headers {m.headers}, produced {r['headers']}")
        if r["offset"] is not None:
            assert m.offset == r["offset"], f"{m.value}: physical offset {m.offset}, reported {r['offset']}"

    tagged = sum(1 for r in produced if r["vp"] >= P)
    m = proxy.metrics()
    assert m["kafka_proxy_records_tagged_total"] == tagged, (
        f"records_tagged_total {m['kafka_proxy_records_tagged_total']}, {tagged} records "
        f"produced to k >= 1 VPs")
    assert m["kafka_proxy_batches_tagged_total"] > 0


def codec_problems(broker_address, name, partitions):
    """Batches on the broker whose codec is not the one their records were
    produced with (the value's second field), or whose CRC is wrong."""
    problems = []
    for p in partitions:
        for b in virtual.raw_batches(broker_address, name, p):
            if not b["records"]:
                continue
            codecs = {rec[2].decode().split("|")[1] for rec in b["records"]}
            assert len(codecs) == 1, f"a batch with records of several codecs {codecs}"
            want = virtual.CODEC_IDS[codecs.pop()]
            if b["codec"] != want or not b["crc_ok"]:
                tags = sorted({virtual.tag_of(rec[3]) for rec in b["records"]}, key=str)
                problems.append(
                    f"physical {p} offset {b['base_offset']}: codec {b['codec']}, produced with "
                    f"{want}; CRC ok {b['crc_ok']}; {HEADER} {tags}; "
                    f"first value {b['records'][0][2][:30]}")
    return problems


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python", "kcat"])
def test_batches_keep_their_codec(broker, start_proxy, topic, client):
    """Each client compresses with each codec, to a k = 0 and a k >= 1 VP of
    each physical partition, and to a 1:1 topic beside them: on the broker
    every batch has the codec its producer chose (k = 0 batches are
    forwarded as they are; k >= 1 batches are re-compressed after tagging).
    Values are padded so that compression always pays (clients send a batch
    uncompressed when it does not)."""
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-codec")
    plain = topic(3, prefix="plain-codec")   # 3 != P: passes through 1:1
    targets = [(name, list(range(P)) + list(range(P, 2 * P))), (plain, [0, 1, 2])]
    for t, vps in targets:
        for codec in CODECS:
            if client == "kcat":
                for vp in vps:
                    virtual.kcat_produce(proxy.address, t, [f"kcat|{codec}|{vp}|{i}{PAD}" for i in range(3)],
                                         partition=vp, codec=codec)
                continue
            recs = [(vp, None, f"{client}|{codec}|{vp}|{i}{PAD}".encode(), [])
                    for vp in vps for i in range(3)]
            if client == "confluent-kafka":
                virtual.produce_confluent_full(proxy.address, t, recs, **{"compression.type": codec})
            else:
                virtual.produce_kafka_python_full(proxy.address, t, recs,
                                                  compression_type=None if codec == "none" else codec)
    problems = (codec_problems(broker.address, name, range(P))
                + [f"1:1 topic: {x}" for x in codec_problems(broker.address, plain, range(3))])
    if problems:
        # librdkafka before 2.10 (Debian's kcat has 2.0.2) compresses with
        # gzip, snappy or lz4 only when ApiVersions advertises Produce v2
        # (librdkafka issue 4956; Kafka 4.0 advertises Produce v0+ for that
        # reason though it refuses v0-v2, KAFKA-18659).
        ranges = {}
        for who, address in (("proxy", proxy.address), ("broker", broker.address)):
            with kafkawire.connect(address) as s:
                _, keys = kafkawire.api_versions(s, 0, 1)
            ranges[who] = {"Produce": keys.get(0), "Fetch": keys.get(1)}
        problems.append(f"ApiVersions: {ranges}")
    assert not problems, f"{len(problems) - 1} batches changed codec:\n" + "\n".join(problems[-31:])


def test_physical_writes_show_in_first_p_vps(broker, start_proxy, topic):
    """Records written straight to the physical topic (no kpr.vp header)
    belong to VP p: a consumer of VP 0..3 sees them interleaved, in offset
    order, with the proxy's own k = 0 records; VPs 4..19 never see them; a
    consumer of the physical topic sees everything."""
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-direct")
    produced = []

    def direct(phase):
        recs = [(p, None, f"direct|{phase}|{p}|{i}".encode(), []) for p in range(P) for i in range(5)]
        reports = virtual.produce_confluent_full(broker.address, name, recs)
        produced.extend((p, v, off) for (p, _, v, _), (_, off) in zip(recs, reports))

    def via_proxy(phase):
        recs = [(vp, None, f"proxy|{phase}|{vp}|{i}".encode(), []) for vp in range(V) for i in range(3)]
        reports = virtual.produce_confluent_full(proxy.address, name, recs)
        produced.extend((vp, v, off) for (vp, _, v, _), (_, off) in zip(recs, reports))

    direct("before")       # data that existed before the proxy
    via_proxy("one")
    direct("between")
    via_proxy("two")

    want = defaultdict(list)
    for vp, value, off in sorted(produced, key=lambda x: (x[0], x[2])):
        want[vp].append((off, value))
    jobs = [(who, vp) for who in virtual.READERS for vp in range(V)]
    results = virtual.parallel(lambda who, vp: virtual.READERS[who](proxy.address, name, vp), jobs)
    problems = []
    for (who, vp), (msgs, error) in zip(jobs, results):
        got = None if error else [(m.offset, m.value) for m in msgs]
        if got != want[vp]:
            problems.append(f"{who} VP {vp}: expected {len(want[vp])} records {want[vp][:4]}..., "
                            + (f"failed: {error}" if error else f"got {len(got)} {got[:4]}..."))
    assert not problems, "\n".join(problems)

    seen = virtual.read_all_direct(broker.address, name, range(P))
    assert sorted((m.partition, m.offset, m.value) for m in seen) == sorted(
        (vp % P, off, v) for vp, v, off in produced)
    for m in seen:
        origin, _, vp = m.value.decode().split("|")[:3]
        vp = int(vp)
        assert virtual.tag_of(m.headers) == (vp if origin == "proxy" and vp >= P else None), m


def mixed_batch_expectations(records, physical):
    """{vp: [values]} for records [(value, headers)] of physical partition
    `physical`: a record belongs to its kpr.vp tag, or to VP p untagged."""
    want = defaultdict(list)
    for value, headers in records:
        want[virtual.tag_of(headers) if virtual.tag_of(headers) is not None else physical].append(value)
    return want


def test_mirrored_batch_mixing_vps(broker, start_proxy, topic):
    """One record batch holding records of several VPs of physical 0, as a
    mirror (MirrorMaker copying the physical topic with its headers) or any
    producer writing tagged records directly would write it: each record
    belongs to the VP its own tag names (untagged: VP 0), not to the VP of
    the batch's first record. Each VP read alone, by each client, holds
    exactly its records."""
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    name = topic(P, prefix="vp-mixed")
    tagged = lambda v: [(HEADER, str(v).encode())]  # noqa: E731
    records = [(b"mixed|4|a", tagged(4)), (b"mixed|0|a", []), (b"mixed|8|a", tagged(8)),
               (b"mixed|4|b", tagged(4)), (b"mixed|16|a", tagged(16)), (b"mixed|0|b", [])]
    virtual.produce_confluent_full(broker.address, name,
                                   [(0, None, v, h) for v, h in records],
                                   **{"linger.ms": 200})
    batches = virtual.raw_batches(broker.address, name, 0)
    assert [b["count"] for b in batches] == [len(records)], (
        f"precondition: one batch of {len(records)} records on the broker, got "
        f"{[(b['base_offset'], b['count']) for b in batches]}")

    want = mixed_batch_expectations(records, 0)
    problems = []
    for who, reader in virtual.READERS.items():
        for vp in (0, 4, 8, 12, 16):
            try:
                got = [m.value for m in reader(proxy.address, name, vp)]
            except AssertionError as e:
                got = f"failed: {e}"
            if got != want.get(vp, []):
                problems.append(f"{who} VP {vp}: expected {want.get(vp, [])}, got {got}")
    assert not problems, "\n".join(problems)


def test_sqlite_broker_merged_batches(broker_factory, start_proxy):
    """Tansu with sqlite storage answers a Fetch with the records of several
    produce batches merged into one batch (seen: the proxy's five tagged
    single-record batches for VPs 7, 11, 15, 19 and 3 come back as one batch
    at offset 0 with 5 records). Kafka keeps batches as produced, but a
    proxy in front of such a broker must still give each VP its own records:
    records are tagged one by one, so the VP is a property of the record."""
    upstream = broker_factory("sqlite")
    proxy = start_proxy(upstream=upstream, mapping=virtual.mapping(V, P))
    name = f"vp-sqlite-{upstream.port}"
    clients.create_topic(upstream.address, name, P)
    recs = [(vp, None, f"sqlite|{vp}|{i}".encode(), []) for i in range(3) for vp in range(V)]
    virtual.produce_confluent_full(proxy.address, name, recs)
    merged = [(p, b["base_offset"], b["count"]) for p in range(P)
              for b in virtual.raw_batches(upstream.address, name, p)
              if len({virtual.tag_of(r[3]) for r in b["records"]}) > 1]
    print(f"batches on the broker mixing VPs (partition, base offset, count): {merged}")

    jobs = [(who, vp) for who in virtual.READERS for vp in range(V)]
    results = virtual.parallel(lambda who, vp: virtual.READERS[who](proxy.address, name, vp), jobs)
    problems = []
    for (who, vp), (msgs, error) in zip(jobs, results):
        want = [f"sqlite|{vp}|{i}".encode() for i in range(3)]
        got = None if error else [m.value for m in msgs]
        if got != want:
            problems.append(f"{who} VP {vp}: expected {want}, "
                            + (f"failed: {error}" if error else f"got {len(got)}: {got[:6]}"))
    assert not problems, (f"{len(problems)} VP reads wrong; broker batches mixing VPs: "
                          f"{merged[:8]}\n" + "\n".join(problems[:30]))


def test_acks_zero_kafka_python(broker, start_proxy, topic):
    """kafka-python, acks=0, to every VP (several VPs of one physical
    partition per request), then flush() and close(): with acks=0 nothing is
    awaited, so the producer closes its connection right after sending.
    Every record must still arrive in its VP, as with Kafka (and Tansu
    directly), which handle the requests they received before the close.

    Not with confluent-kafka: Tansu answers a Produce with acks=0 (Kafka
    sends nothing), the proxy then closes the client connection ("sent a
    response to no request"), and librdkafka straight against Tansu loses
    records too (seen: 40 of 80)."""
    proxy = start_proxy(mapping=virtual.mapping(V, P), log_level="debug")
    name = topic(P, prefix="vp-acks0")
    mark = proxy.log_mark()
    recs = [(vp, None, f"acks0|{vp}|{i}".encode(), []) for i in range(20) for vp in range(V)]
    virtual.produce_kafka_python_full(proxy.address, name, recs, acks=0)
    time.sleep(1)
    results = virtual.parallel(lambda vp: virtual.read_vp_confluent(proxy.address, name, vp),
                               [(vp,) for vp in range(V)])
    problems = []
    for vp, (msgs, error) in enumerate(results):
        want = [f"acks0|{vp}|{i}".encode() for i in range(20)]
        got = None if error else [m.value for m in msgs]
        if got != want:
            problems.append(f"VP {vp}: " + (error or f"{len(got)} records, first {got[:3]}"))
    lines = virtual.log_lines(proxy, r"\[(WARN|ERROR)\]|disconnected|Produce ->", mark)
    assert not problems, "\n".join(problems) + "\nproxy:\n" + "\n".join(lines[:12])


@pytest.mark.parametrize("acks", [0, 1])
def test_request_sent_before_client_closes(broker, start_proxy, topic, acks):
    """A raw client sends one Produce (to a k = 0 and a k >= 1 VP of one
    physical partition) and closes its socket at once, without reading a
    response. Kafka handles a request it received whole before the close;
    the proxy must forward it, not drop it with the connection."""
    proxy = start_proxy(mapping=virtual.mapping(V, P), log_level="debug")
    name = topic(P, prefix="vp-close")
    mark = proxy.log_mark()
    with kafkawire.connect(proxy.address) as s:
        _, keys = kafkawire.api_versions(s, 0, 1)      # a client's usual first request
        batch0 = kafkawire.record_batch([(None, b"close|1", [])])
        batch1 = kafkawire.record_batch([(None, b"close|5", [])])
        s.sendall(kafkawire.produce_request(9, {name: {1: batch0, 5: batch1}}, version=3,
                                            acks=acks))
    time.sleep(2)
    direct = virtual.read_all_direct(broker.address, name, [1])
    lines = virtual.log_lines(proxy, r"\[(WARN|ERROR)\]|disconnected|Produce ->|upstream", mark)
    assert sorted(m.value for m in direct) == [b"close|1", b"close|5"], (
        f"acks={acks}: physical 1 holds {[m.value for m in direct]}; proxy:\n" + "\n".join(lines[:10]))
