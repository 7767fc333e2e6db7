"""Signals that arrive while the proxy starts (found by the full suite:
test_journal_logs stopped the proxy right after `Listening on`, and the
proxy died of SIGTERM, exit -15). `Listening on` is logged before the proxy
reaches the cluster, and until the handlers were installed after that, a
signal took its default action: SIGTERM and SIGINT killed the process
without the shutdown of kpr-proxy(1) SIGNALS, and SIGHUP (`systemctl
reload` during a start) killed it too.

The start is held open by a bootstrap server that accepts and never
answers (a local listener: nothing leaves 127.0.0.1), so the signals land
inside it every time; the proxy must still end the way it ends without
them: exit 4, the cluster unreachable, after its own request timeout."""

import signal
import subprocess
import time

import pytest

import harness
from test_upstream_misbehaviour import OneShotServer


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_during_start_does_not_kill_the_proxy(tmp_path, sig):
    silent = OneShotServer(None)
    config = harness.proxy_config(f"127.0.0.1:{silent.port}", harness.free_port(),
                                  extra={"kafka": {"connection_timeout_ms": 3000,
                                                   "request_timeout_ms": 3000}})
    path = tmp_path / "proxy.yaml"
    path.write_text(harness.to_yaml(config) + "\n")
    log = tmp_path / "proxy.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(harness.PROXY_BIN), "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "Listening on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "Listening on" in log.read_text(), log.read_text()
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        silent.close()
    text = log.read_text()
    print(f"{sig.name}: exit {code}\n{text[-1500:]}")
    assert code == 4, f"{sig.name} during the start ended the proxy with {code}:\n{text[-1500:]}"
