"""Kafka record formats for tests that build or read them on the wire:
v2 record batches (magic 2, CRC-32C), legacy message sets (magic 0/1), and
reading the batches of a Fetch answer. Standard library only (see
kafkawire.py, which re-exports these).
"""

import struct
import time
import zlib


def _uvarint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), as record batches v2 use."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(n):
    """Signed zig-zag varint (record fields)."""
    return _uvarint((n << 1) ^ (n >> 63))


def _varbytes(b):
    return _varint(-1) if b is None else _varint(len(b)) + b


def record_batch(records, base_offset=0, producer_id=-1, producer_epoch=-1,
                 base_sequence=-1, transactional=False, timestamp_ms=None):
    """An uncompressed v2 record batch (magic 2) with a valid CRC-32C.

    records: [(key, value, [(header_key, header_value)])], bytes or None.
    """
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = b""
    for i, (key, value, headers) in enumerate(records):
        rec = (b"\x00" + _varint(0) + _varint(i) + _varbytes(key) + _varbytes(value)
               + _varint(len(headers))
               + b"".join(_varbytes(hk.encode()) + _varbytes(hv) for hk, hv in headers))
        body += _varint(len(rec)) + rec
    attributes = 0x10 if transactional else 0
    after_crc = (struct.pack(">hiqqqhii", attributes, len(records) - 1, ts, ts,
                             producer_id, producer_epoch, base_sequence, len(records))
                 + body)
    # length counts from the partition leader epoch to the end.
    head = struct.pack(">qiib", base_offset, 4 + 1 + 4 + len(after_crc), 0, 2)
    return head + struct.pack(">I", crc32c(after_crc)) + after_crc


def message_set(messages, magic=1, timestamp_ms=None):
    """A legacy message set (magic 0 or 1), uncompressed, CRC-32 per message.

    messages: [(key, value)].
    """
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    out = b""
    for offset, (key, value) in enumerate(messages):
        body = struct.pack(">bb", magic, 0)
        if magic >= 1:
            body += struct.pack(">q", ts)
        for b in (key, value):
            body += struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b
        msg = struct.pack(">I", zlib.crc32(body)) + body
        out += struct.pack(">qi", offset, len(msg)) + msg
    return out


def parse_batches(records):
    """Record batches (magic 2) in a Fetch response's records: a list of
    dicts with base_offset, last_offset_delta, attributes, codec, producer_id,
    base_sequence, count and raw (the whole batch). A trailing partial batch
    is left out, as clients do."""
    out = []
    pos = 0
    while pos + 17 <= len(records):
        base_offset, length, _epoch, magic = struct.unpack(">qiib", records[pos:pos + 17])
        end = pos + 12 + length
        if end > len(records):
            break
        batch = records[pos:end]
        if magic == 2:
            (crc, attributes, last_delta, _first_ts, _max_ts, pid, _pe, base_seq,
             count) = struct.unpack(">Ihiqqqhii", batch[17:61])
            out.append({"base_offset": base_offset, "last_offset_delta": last_delta,
                        "attributes": attributes, "codec": attributes & 7,
                        "producer_id": pid, "base_sequence": base_seq, "count": count,
                        "crc_ok": crc == crc32c(batch[21:]), "magic": magic, "raw": batch})
        else:
            out.append({"base_offset": base_offset, "magic": magic, "raw": batch})
        pos = end
    return out
