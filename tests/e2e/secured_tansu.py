"""A Tansu broker that requires SASL, with SCRAM users and topics made
before it starts requiring it.

Tansu's `user create` and `topic create` talk to the broker as a client
without authenticating, so an authenticating broker refuses them. The
broker therefore starts open on a sqlite file, gets its users and topics,
stops, and starts again on the same file with `--authentication`.

Tansu checks SCRAM-SHA-256 and SCRAM-SHA-512 proofs against the stored
credentials. PLAIN is no proof with Tansu (its PLAIN check is said not to
verify passwords; Tansu 0.6 as installed here closes the connection on a
SaslHandshake naming PLAIN), so the tests prove authentication with SCRAM.
"""

import subprocess
import time

import pytest

import harness
import kafkawire
from harness import Broker, Process

MECHANISM_FLAG = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}


class SecuredTansu(Broker):
    """A Broker whose second start requires SASL authentication."""

    def __init__(self, run_dir, users, topics=(), name="secured", advertised_port=None,
                 advertised_host="127.0.0.1"):
        """users: [(mechanism, name, password)]; topics: [(name, partitions)]."""
        super().__init__(run_dir, name=name, advertised_port=advertised_port,
                         advertised_host=advertised_host)
        self.storage = f"sqlite:///{self.run_dir / f'{name}.db'}"
        self.users = list(users)
        self.topics = list(topics)

    def start(self, timeout=30.0):
        super().start(timeout)  # open: users and topics can be made
        for mechanism, user, password in self.users:
            self._tansu("user", "create", "--broker", self.url,
                        "--mechanism", MECHANISM_FLAG[mechanism], user, password)
        for topic, partitions in self.topics:
            self.create_topic_cli(topic, partitions)
        self.stop()
        log = self.run_dir / f"{self.name}-{self.port}-auth.log"
        env = {k: v for k, v in harness.os.environ.items() if k not in harness.TANSU_ENV}
        self.process = Process(
            f"tansu {self.name} (--authentication)",
            [harness.tansu_path(), "broker", "--listener-url", self.url,
             "--advertised-listener-url", self.advertised_url,
             "--storage-engine", self.storage, "--authentication"],
            log, env=env)
        self._wait_api_versions(timeout)
        return self

    def _tansu(self, *args):
        out = subprocess.run([harness.tansu_path(), *args], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, f"tansu {' '.join(args[:2])}: {out.stderr}{out.stdout}"

    def _wait_api_versions(self, timeout):
        """Ready when ApiVersions is answered (the one request an
        authenticating broker answers before SASL)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.process.alive():
                pytest.fail("secured tansu exited at start\n" + self.process.describe())
            try:
                with kafkawire.connect(self.address, 2.0) as s:
                    error, _ = kafkawire.api_versions(s, 0, 1)
                    assert error == 0
                    return
            except (OSError, kafkawire.WireError) as e:
                last = e
            time.sleep(0.2)
        pytest.fail(f"secured tansu not ready after {timeout}s ({last})\n" + self.process.describe())
