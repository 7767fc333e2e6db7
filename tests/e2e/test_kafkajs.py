"""KafkaJS (the Node client) produces and consumes through the proxy."""

import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

import harness

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_kafkajs_produce_consume(proxy, topic):
    partitions = 3
    run_smoke(proxy.address, topic(partitions), partitions)


def run_smoke(bootstrap, name, partitions, per_partition=100, env=None):
    """smoke.js through `bootstrap` on topic `name` (as many partitions as
    the client sees); asserts every record came back once, in order.
    env: extra environment (e.g. KPR_E2E_SSL_CA, see smoke.js)."""
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"kafkajs not installed in {NODE_DIR}: {harness.INSTALL_HINT}")
    out = subprocess.run(
        ["node", str(NODE_DIR / "smoke.js"), bootstrap, name, str(partitions),
         str(per_partition), "90000"],
        capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
        env={**os.environ, **(env or {})})
    assert out.returncode == 0, f"smoke.js exited {out.returncode}:\n{out.stderr[-3000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(err == 0 for _, _, err in result["produced"]), result["produced"]

    by_partition = defaultdict(list)
    for p, offset, value in result["consumed"]:
        by_partition[p].append((offset, value))
    assert sorted(by_partition) == list(range(partitions))
    for p, got in by_partition.items():
        offsets = [o for o, _ in got]
        assert offsets == sorted(set(offsets)), f"partition {p}: offsets {offsets[:10]}..."
        assert [v for _, v in got] == [f"{p}:{i}:kafkajs" for i in range(per_partition)]
