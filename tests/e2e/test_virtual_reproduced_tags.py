"""Records read through the proxy keep their kpr.vp tag (fetch passes
batches on unchanged). Applications that produce such records again with
their headers (Kafka Streams forwards headers by default; so do mirrors and
many copy jobs) must find them in the virtual partition they produced to,
not in the one the old tag names.

20 virtual over 4 physical. Records produced to virtual 4 (physical 0, so
tagged kpr.vp=4) are read back through the proxy with confluent-kafka, then
produced again, headers and all, to another topic: half to virtual 0 (k = 0
on the same physical partition, the case that used to go wrong: the batch
went upstream unchanged, and fetch showed its records in virtual 4) and
half to virtual 8 (k = 2, tagged again; the appended tag is the last and
decides). Each virtual partition of the second topic must hold exactly what
was produced to it, uncompressed and lz4.
"""

import uuid

import pytest

import clients
import virtual

V, P = 20, 4


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_reproduced_records_stay_where_they_are_produced(broker, start_proxy, codec):
    proxy = start_proxy(mapping=virtual.mapping(V, P))
    suffix = uuid.uuid4().hex[:8]
    source, target = f"reproduce-src-{suffix}", f"reproduce-dst-{suffix}"
    for name in (source, target):
        clients.create_topic(broker.address, name, P)
    conf = {"compression.type": codec}

    originals = [(4, None, f"{codec}-{i}".encode(), [("app", b"kept")]) for i in range(30)]
    clients.produce_confluent_headers(proxy.address, source, originals, **conf)
    read = virtual.read_vp_confluent(proxy.address, source, 4)
    assert [m.value for m in read] == [v for _, _, v, _ in originals]
    assert all(virtual.tag_of(m.headers) == 4 for m in read), "consumers see the tag"

    again = [(0 if i % 2 == 0 else 8, None, m.value, m.headers) for i, m in enumerate(read)]
    clients.produce_confluent_headers(proxy.address, target, again, **conf)
    for vp in (0, 4, 8):
        got = virtual.read_vp_confluent(proxy.address, target, vp)
        want = [v for p, _, v, _ in again if p == vp]
        assert [m.value for m in got] == want, f"{codec}: virtual partition {vp} of {target}"
        for m in got:
            assert ("app", b"kept") in m.headers, "the application's own headers are kept"
            tags = [v for k, v in m.headers if k == virtual.HEADER]
            assert tags[-1] == str(vp).encode(), f"{codec}: last tag of a record in {vp}: {tags}"
