"""Idempotence that survives the proxy: derived producer ids shared through
the cluster (issue 8, finding 2; design page, "Idempotent producers").

A k >= 1 virtual partition writes under a derived producer id. If that id
lived only in the proxy's memory, a batch retried after a proxy restart, or
through another instance behind the same address, would arrive under a new
id and the broker would store it twice (seen: 5,000 of 20,000 records after
one SIGKILL). The mapping lives in the proxy's compacted topic
`__kpr_producer_ids`, so every instance, before and after a restart, puts a
retried batch under the same (producer id, sequence), and the broker's own
duplicate detection drops it: Kafka's ProducerStateManager answers a
batch whose sequence it has already stored with DUPLICATE_SEQUENCE_NUMBER
folded into success (the client sees its original offset), which Tansu
mimics for k = 0 and now sees for k >= 1 too.

Checked here, reading the physical topic directly:
- an idempotent confluent-kafka producer writing 20,000 records over 20 VPs
  on 4 physical partitions while the proxy is SIGKILLed once and started
  again: every record acknowledged, every record stored exactly once, one
  producer id per sibling index k from the first record to the last;
- the same producer behind a load balancer in front of two proxy instances,
  whose connections are cut and moved from one instance to the other twice
  mid-run, requests in flight: the same.
- the producer-id topic exists and holds the mappings (one per k >= 1).
"""

import time
from collections import Counter, defaultdict

from confluent_kafka import Producer

import clients
import virtual
from relay import Switch
from test_virtual_idempotence import check_producer_ids, producer_ids_on_broker

V, P = 20, 4
RECORDS = 20_000
ID_TOPIC = "__kpr_producer_ids"


def produce_through(bootstrap, name, at_fractions, action):
    """Produce RECORDS records (record i to VP i % V) with an idempotent
    producer; when the acknowledged count first reaches each fraction of
    RECORDS, call action(n) (n = 0, 1, ...) while requests are in flight."""
    delivered, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg.value())

    producer = Producer(clients.confluent_conf(bootstrap, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "message.timeout.ms": 120000, "retry.backoff.ms": 200,
        "queue.buffering.max.messages": 2000}))
    done = 0

    def maybe_act():
        nonlocal done
        while done < len(at_fractions) and len(delivered) >= at_fractions[done] * RECORDS:
            action(done)
            done += 1

    for i in range(RECORDS):
        while True:
            try:
                producer.produce(name, value=f"{i}|{i % V}".encode(), partition=i % V,
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
                maybe_act()
        producer.poll(0)
        maybe_act()
    left = producer.flush(150)
    maybe_act()
    assert done == len(at_fractions), f"only {done} of {len(at_fractions)} actions ran"
    assert left == 0, f"{left} records not acknowledged"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(delivered) == RECORDS, f"{len(delivered)} acknowledged"


def in_flight_when(relay, act):
    """Hold the broker's answers until it has acted on produce requests,
    then act (kill the proxy, move the client), then drop them: the client
    must retry batches the broker has already stored."""
    before = relay.held_count()
    relay.hold_responses()
    deadline = time.monotonic() + 20
    while relay.held_count() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.held_count() > before, "no answer held within 20 s"
    time.sleep(0.3)   # let more requests reach the broker
    act()
    relay.stop_holding()


def assert_stored_once(broker_address, name):
    msgs = virtual.read_all_direct(broker_address, name, range(P), timeout=120.0)
    seen = Counter()
    for m in msgs:
        i, vp = map(int, m.value.decode().split("|"))
        assert m.partition == vp % P, f"record {i} of VP {vp} on physical {m.partition}"
        assert virtual.tag_of(m.headers) == (vp if vp >= P else None), (m.value, m.headers)
        seen[i] += 1
    twice = {i: c for i, c in seen.items() if c > 1}
    by_k = Counter((i % V) // P for i in twice)
    missing = [i for i in range(RECORDS) if i not in seen]
    assert not twice, (f"{len(twice)} records stored more than once (by sibling index k: "
                       f"{dict(by_k)}), e.g. {sorted(twice)[:5]}")
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"


def assert_mappings_logged(broker_address):
    """The producer-id topic holds a mapping per k >= 1 of the producer."""
    msgs = virtual.read_all_direct(broker_address, ID_TOPIC, [0])
    keys = defaultdict(list)
    for m in msgs:
        keys[m.key.decode()].append(m.value)
    pids = [k for k in keys if k.startswith("pid/")]
    assert len({k.rsplit("/", 1)[1] for k in pids}) == V // P - 1, f"mappings: {sorted(keys)}"


def test_sigkill_of_the_proxy_mid_run_stores_nothing_twice(broker_behind_relay, start_proxy):
    upstream, relay = broker_behind_relay
    proxy = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P))
    name = f"vp-kill-{relay.port}"
    clients.create_topic(upstream.address, name, P)

    def kill():
        proxy.process.proc.kill()   # SIGKILL: nothing flushed, nothing said
        proxy.process.proc.wait()

    def kill_and_restart(_):
        in_flight_when(relay, kill)
        proxy.start()

    produce_through(proxy.address, name, [0.3], kill_and_restart)
    print(f"answers held and dropped: {relay.held_count()}")
    assert_stored_once(upstream.address, name)
    check_producer_ids(producer_ids_on_broker(upstream.address, name))
    assert_mappings_logged(upstream.address)


def test_retries_moving_between_two_instances_store_nothing_twice(broker_behind_relay, start_proxy):
    """Two instances behind one address (the Switch plays the load
    balancer; both advertise its address, as they would behind an NLB).
    Twice mid-run the client's connections are cut while the broker has
    stored batches whose answers have not come back, and it reconnects
    to the other instance, which gets the retries."""
    upstream, relay = broker_behind_relay
    switch = Switch(None)
    try:
        name = f"vp-two-{relay.port}"
        clients.create_topic(upstream.address, name, P)
        extra = {"listen": {"advertised_address": switch.address}}
        a = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P), extra=extra, name="proxy-a")
        b = start_proxy(upstream=relay.address, mapping=virtual.mapping(V, P), extra=extra, name="proxy-b")
        switch.switch_to(a.port)
        order = [b.port, a.port]
        produce_through(switch.address, name, [0.25, 0.6],
                        lambda n: in_flight_when(relay, lambda: switch.switch_to(order[n])))
        assert switch.connections >= 3, f"the client connected {switch.connections} times"
        assert_stored_once(upstream.address, name)
        check_producer_ids(producer_ids_on_broker(upstream.address, name))
        assert_mappings_logged(upstream.address)
    finally:
        switch.close()
