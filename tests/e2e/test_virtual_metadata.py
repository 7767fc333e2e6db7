"""Metadata of remapped topics, through each client, under ONE proxy config
holding the user's guide examples (config/per-topic.yaml) plus a 20-over-4
rule and rules that exercise precedence:

    default          100 virtual over 10 physical
    events           500 over 10            (exact name)
    audit\\..*        50 over 5              (regex, first in file order)
    config           3 over 3               (exact: pass-through)
    vp20-<id>        20 over 4              (exact)
    audit.exact<id>  30 over 3              (exact beats the audit regex)
    audit\\.late.*    40 over 4              (regex after audit\\..*: never used,
                                             audit\\..* matches first)

Topics on the broker, and what clients must see through the proxy:

    events            10 -> 500         orders-<id>    10 -> 100 (default)
    audit.<id>         5 -> 50          plain-<id>      7 -> 7   (default: P != 10)
    config             3 -> 3           vp20-<id>       4 -> 20
    audit.exact<id>    3 -> 30          audit.late<id>  5 -> 50  (first regex)
    audit.bad<id>      4 -> error INVALID_PARTITIONS (37): the audit rule says
                          5 physical; the proxy logs an error naming it.

Every partition of a remapped topic is led by the proxy's broker id, and the
partitions are exactly 0..V-1.
"""

import uuid

import pytest

import clients
import virtual

ID = uuid.uuid4().hex[:6]
VP20 = f"vp20-{ID}"
AUDIT = f"audit.{ID}"
AUDIT_EXACT = f"audit.exact{ID}"
AUDIT_LATE = f"audit.late{ID}"
AUDIT_BAD = f"audit.bad{ID}"
ORDERS = f"orders-{ID}"
PLAIN = f"plain-{ID}"

# name: (physical partitions on the broker, partitions clients must see or
# the error code they must get)
TOPICS = {
    "events": (10, 500),
    "config": (3, 3),
    AUDIT: (5, 50),
    AUDIT_EXACT: (3, 30),
    AUDIT_LATE: (5, 50),
    AUDIT_BAD: (4, "error 37"),
    ORDERS: (10, 100),
    PLAIN: (7, 7),
    VP20: (4, 20),
}

MAPPING = {
    "virtual_partitions": 100, "physical_partitions": 10,
    "topics": {
        "events": {"virtual_partitions": 500, "physical_partitions": 10},
        "audit\\..*": {"virtual_partitions": 50, "physical_partitions": 5},
        "config": {"virtual_partitions": 3, "physical_partitions": 3},
        VP20: {"virtual_partitions": 20, "physical_partitions": 4},
        AUDIT_EXACT: {"virtual_partitions": 30, "physical_partitions": 3},
        "audit\\.late.*": {"virtual_partitions": 40, "physical_partitions": 4},
    },
}


@pytest.fixture(scope="module")
def guide_topics(broker):
    for name, (physical, _) in TOPICS.items():
        clients.create_topic(broker.address, name, physical)
    return TOPICS


def seen_confluent(address):
    md = clients.list_topics(address)
    broker_ids = set(md.brokers)
    out = {}
    for name in TOPICS:
        t = md.topics.get(name)
        if t is None:
            out[name] = "missing"
        elif t.error is not None:
            out[name] = f"error {t.error.code()}"
        else:
            out[name] = (sorted(t.partitions), {p.leader for p in t.partitions.values()})
    return out, broker_ids


def seen_kafka_python(address):
    admin = clients.kafka_python_admin(address)
    try:
        topics = admin.describe_topics(list(TOPICS))
        broker_ids = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
    finally:
        admin.close()
    out = {}
    for t in topics:
        if t["error_code"]:
            out[t["name"]] = f"error {t['error_code']}"
        else:
            out[t["name"]] = (sorted(p["partition_index"] for p in t["partitions"]),
                              {p["leader_id"] for p in t["partitions"]})
    return out, broker_ids


def seen_kcat(address):
    out = {}
    broker_ids = set()
    for name in TOPICS:
        md = clients.kcat_metadata(address, name)
        broker_ids |= {b["id"] for b in md["brokers"]}
        [t] = [t for t in md["topics"] if t["topic"] == name]
        if t.get("error"):
            out[name] = f"error {t['error']}"
        else:
            out[name] = (sorted(p["partition"] for p in t["partitions"]),
                         {p["leader"] for p in t["partitions"]})
    return out, broker_ids


SEEN = {"confluent-kafka": seen_confluent, "kafka-python": seen_kafka_python, "kcat": seen_kcat}


@pytest.mark.parametrize("client", list(SEEN))
def test_guide_rules_partition_counts(broker, start_proxy, guide_topics, client):
    proxy = start_proxy(mapping=MAPPING)
    seen, broker_ids = SEEN[client](proxy.address)
    problems = []
    for name, (physical, want) in TOPICS.items():
        got = seen.get(name, "missing")
        if isinstance(want, str):
            # kcat names the error instead of giving its code.
            ok = got == want or (client == "kcat" and isinstance(got, str)
                                 and "partition" in got.lower())
            if not ok:
                problems.append(f"{name} ({physical} physical): expected {want}, got {got}")
            continue
        if isinstance(got, str):
            problems.append(f"{name} ({physical} physical): expected {want} partitions, got {got}")
            continue
        ids, leaders = got
        if ids != list(range(want)):
            problems.append(f"{name} ({physical} physical): expected partitions 0..{want - 1}, "
                            f"got {len(ids)}: {ids[:5]}...{ids[-3:]}")
        if not leaders <= broker_ids or -1 in leaders:
            problems.append(f"{name}: leaders {leaders}, brokers in metadata {broker_ids}")
    assert not problems, f"{client} through the proxy:\n" + "\n".join(problems)

    # The mismatch is said loudly: an error-level log line naming the topic.
    line = proxy.wait_for_log(rf"error.*{AUDIT_BAD}", timeout=10)
    print(f"proxy: {line}")


def test_mismatch_keeps_other_topics_usable(broker, start_proxy, guide_topics):
    """The mismatched topic's error does not spill onto its neighbours: a
    record produced to the last VP of each remapped topic is read back from
    that VP alone, and lands on physical v % P."""
    proxy = start_proxy(mapping=MAPPING)
    for name, (physical, want) in TOPICS.items():
        if isinstance(want, str):
            continue
        vp = want - 1
        value = f"{name}|{vp}".encode()
        [(p, off)] = virtual.produce_confluent_full(proxy.address, name, [(vp, None, value, [])])
        assert p == vp
        got = virtual.read_vp_confluent(proxy.address, name, vp)
        assert [(m.offset, m.value) for m in got] == [(off, value)], f"{name} VP {vp}: {got}"
        direct = virtual.read_all_direct(broker.address, name, [vp % physical])
        assert [(m.offset, m.value) for m in direct] == [(off, value)], f"{name}: {direct}"
        tag = virtual.tag_of(direct[0].headers)
        assert tag == (vp if vp >= physical else None), f"{name} VP {vp}: tag {tag}"
