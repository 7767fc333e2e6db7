"""Log lines under systemd (issue 12): when JOURNAL_STREAM names the
proxy's stderr (systemd sets it to the stream's device:inode), each line
starts with its syslog priority (<3> error .. <7> debug, sd-daemon(3)) and
carries no timestamp of its own (the journal stamps it). A JOURNAL_STREAM
naming another stream (stderr redirected since) changes nothing.

The journal is stood in for by the log file: its device and inode are what
systemd would put in the variable.
"""

import os
import re

import harness

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def start(broker, tmp_path, monkeypatch, journal_stream):
    config = harness.proxy_config(broker.address, harness.free_port())
    proxy = harness.Proxy(tmp_path, config)
    proxy.log_path.touch()
    st = os.stat(proxy.log_path)
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream(st))
    return proxy.start()


def whole_lines(proxy):
    """The log's complete lines (a line being written is left out)."""
    text = proxy.log_since(0)
    return text[:text.rfind("\n") + 1].splitlines()


def test_lines_for_the_journal_carry_priority_and_no_time(broker, tmp_path, monkeypatch):
    proxy = start(broker, tmp_path, monkeypatch, lambda st: f"{st.st_dev}:{st.st_ino}")
    try:
        lines = whole_lines(proxy)
        print("\n".join(lines[:4]))
        assert lines and all(re.match(r"^<[3-7]>", line) for line in lines), lines
        assert not any(TIMESTAMP.search(line[3:]) for line in lines), lines
        assert any(line.startswith("<6>Listening on ") for line in lines), lines
    finally:
        assert proxy.stop() == (0, True)


def test_journal_stream_of_another_stream_is_ignored(broker, tmp_path, monkeypatch):
    proxy = start(broker, tmp_path, monkeypatch, lambda st: f"{st.st_dev}:{st.st_ino + 1}")
    try:
        lines = whole_lines(proxy)
        assert lines and all(TIMESTAMP.match(line) for line in lines), lines
    finally:
        assert proxy.stop() == (0, True)
