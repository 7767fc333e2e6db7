"""Produce requests of one client burst merged upstream (20 over 4).

A client writing many virtual partitions sends many small produce requests;
the proxy sends those it re-encodes anyway (remapped topics) to the broker
in as few requests as Kafka allows: one entry per physical partition per
request, a partition's batches in the order they came. Checked with raw
requests written in one burst, so the proxy surely sees them together:

- every request is answered, in order, with its own correlation id and an
  answer for exactly the virtual partitions it named;
- the metric shows requests went upstream merged;
- every virtual partition, read back through the proxy, holds its records in
  the order they were sent, also when one burst writes a virtual partition
  several times, names siblings in one request, or mixes acks;
- on the broker, each physical partition holds every record once.
"""

from collections import defaultdict

import kafkawire
import virtual

V, P = 20, 4


def batch(values):
    return kafkawire.record_batch([(None, v.encode(), []) for v in values])


def test_a_burst_of_produce_requests_is_merged_and_answered_per_request(broker, start_proxy, topic):
    name = topic(P, prefix="vp-merge")
    proxy = start_proxy(mapping=virtual.mapping(V, P), metrics=True)
    # (correlation id, acks, {vp: values}) in the order written.
    requests = []
    for i in range(V):
        requests.append((100 + i, -1, {i: [f"a|{i}|{j}" for j in range(3)]}))
    # Siblings of physical 1 in one request, then VP 2 again, then acks=1.
    requests.append((200, -1, {1: ["b|1|0"], 5: ["b|5|0"], 9: ["b|9|0"]}))
    requests.append((201, -1, {2: ["b|2|0", "b|2|1"]}))
    requests.append((202, 1, {2: ["c|2|0"], 3: ["c|3|0"]}))
    requests.append((203, -1, {2: ["d|2|0"], 7: ["d|7|0"]}))
    frames = [kafkawire.produce_request(corr, {name: {vp: batch(vals) for vp, vals in vps.items()}},
                                        version=8, acks=acks)
              for corr, acks, vps in requests]

    before = proxy.metrics()
    with kafkawire.connect(proxy.address, timeout=30) as sock:
        sock.sendall(b"".join(frames))
        answers = []
        for corr, _, vps in requests:
            payload = kafkawire.read_frame(sock)
            assert payload is not None, f"connection closed after {len(answers)} of {len(requests)} answers"
            got_corr, result = kafkawire.parse_produce_response(8, payload)
            assert got_corr == corr, f"answer {len(answers)}: correlation id {got_corr}, expected {corr}"
            assert set(result) == {(name, vp) for vp in vps}, f"request {corr}: answered {sorted(result)}"
            bad = {k: v for k, v in result.items() if v["error"] != 0}
            assert not bad, f"request {corr}: errors {bad}"
            answers.append(result)
    after = proxy.metrics()
    merged = after["kafka_proxy_produce_requests_merged_total"] - before["kafka_proxy_produce_requests_merged_total"]
    into = (after["kafka_proxy_produce_requests_merged_into_total"]
            - before["kafka_proxy_produce_requests_merged_into_total"])
    print(f"{len(requests)} requests in one burst: {merged:.0f} went upstream merged, in {into:.0f} requests")
    assert merged >= 2 and into >= 1 and into < merged, (merged, into)

    # Base offsets are physical offsets: per physical partition, each answer's
    # offset lies past the previous one's batch, in request order.
    next_free = defaultdict(lambda: -1)
    for (corr, _, vps), result in zip(requests, answers):
        for vp, vals in vps.items():
            p = vp % P
            offset = result[(name, vp)]["base_offset"]
            assert offset >= next_free[p], (
                f"request {corr} VP {vp}: base offset {offset} on physical {p}, "
                f"but offsets up to {next_free[p] - 1} were answered before")
            next_free[p] = offset + len(vals)

    want = defaultdict(list)
    for _, _, vps in requests:
        for vp, vals in vps.items():
            want[vp].extend(vals)
    jobs = [(vp,) for vp in range(V)]
    results = virtual.parallel(lambda vp: virtual.read_vp_confluent(proxy.address, name, vp), jobs)
    problems = []
    for (vp,), (msgs, error) in zip(jobs, results):
        got = [m.value.decode() for m in msgs or []]
        if error or got != want[vp]:
            problems.append(f"VP {vp}: {error or got}, expected {want[vp]}")
    assert not problems, "\n".join(problems)

    direct = virtual.read_all_direct(broker.address, name, range(P))
    on_broker = sorted(m.value.decode() for m in direct)
    assert on_broker == sorted(v for vals in want.values() for v in vals), "physical topic differs"
