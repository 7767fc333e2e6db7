"""Bad frames: an oversize size prefix and malformed requests each get their
connection closed and a log line; the proxy keeps serving other connections
(one opened before, one after)."""

import struct

import pytest

import kafkawire

# Far above any sane max_frame_bytes (Kafka's socket.request.max.bytes
# defaults to 100 MiB); the proxy must not try to buffer it.
OVERSIZE = 0x7FFF_FFF0

BAD_FRAMES = {
    # size prefix only, announcing ~2 GiB
    "oversize": struct.pack(">i", OVERSIZE) + b"\x00" * 64,
    "negative-size": struct.pack(">i", -5) + b"\x00" * 8,
    # a 3-byte request cannot hold a request header (10 bytes at least)
    "truncated-header": struct.pack(">i", 3) + b"\x00\x12\x00",
    # ApiVersions v1 header whose client id length runs past the frame
    "client-id-overrun": struct.pack(">i", 12) + struct.pack(">hhih", 18, 1, 9, 500) + b"ab",
    # random-looking bytes with a plausible size
    "garbage": struct.pack(">i", 24) + bytes.fromhex("deadbeefcafebabe0badf00d" * 2),
}

LOG_PATTERN = r"frame|malformed|invalid|decode|truncat|too (large|big)|size|unknown api|bad request"


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
def test_bad_frame_closes_connection(proxy, kind):
    with kafkawire.connect(proxy.address, timeout=5) as bystander:
        assert kafkawire.api_versions(bystander, 0, 1)[0] == 0
        mark = proxy.log_mark()

        with kafkawire.connect(proxy.address, timeout=5) as bad:
            bad.sendall(BAD_FRAMES[kind])
            assert kafkawire.wait_closed(bad, timeout=5), (
                f"{kind}: the proxy did not close the connection")

        line = proxy.wait_for_log(LOG_PATTERN, since=mark, timeout=5)
        print(f"{kind}: proxy log: {line}")

        # The connection opened before still works...
        assert kafkawire.api_versions(bystander, 3, 2)[0] == 0
    # ...and so does a new one.
    with kafkawire.connect(proxy.address, timeout=5) as after:
        assert kafkawire.api_versions(after, 0, 3)[0] == 0
        brokers, _, _ = kafkawire.metadata_v1(after, None, 4)
        assert brokers
    assert proxy.alive()
