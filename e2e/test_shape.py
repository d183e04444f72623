"""Clusters that change shape on real pods, each with an idempotent acks=all producer
running in a pod and every acknowledged record read back afterwards: scale up (with
rebalance), scale down (decommission), a rolling upgrade to another build, a broker
pod force-deleted and a broker process killed in its pod, the operator deleted in the
middle of an upgrade, and an image that does not exist."""

from __future__ import annotations

import json
import os
import re
import time

from conftest import CLUSTER, NAMESPACE, TAG, Kube, pod_ready, step
from test_chronik import acked, internal_bootstrap, seen

NEXT_TAG = os.environ.get("CHRONIK_NEXT_TAG", f"{TAG}-next")
RATE = 100


def start_producer(kube: Kube, name: str, topic: str, seconds: int = 600) -> None:
    """Starts a producer that runs until `finish_producer` stops it (or `seconds` pass)."""
    kube.start_client_pod(name, ["produce", "-brokers", internal_bootstrap(), "-topic", topic,
                                 "-rate", str(RATE), "-duration", f"{seconds}s", "-timeout", "120s"])
    kube.wait(f"producer {name} to run", lambda: kube.get("pod", name)["status"].get("phase") == "Running", 120)


def finish_producer(kube: Kube, name: str, topic: str) -> dict:
    """Stops the producer (the scenario is over: SIGTERM ends its production and it waits
    for what is outstanding), reads the topic back; returns the acknowledged count and the
    producer's longest stall between acknowledgements."""
    pod = kube.get("pod", name)
    if "running" in pod["status"]["containerStatuses"][0]["state"]:
        kube.signal_container(pod, "SIGTERM")
    log = kube.finish_client_pod(name, timeout=600)
    summary = re.search(r"summary acked=(\d+) failed=(\d+) max_stall_ms=(\d+)", log)
    assert summary, log[-3000:]
    sent = acked(log)
    assert int(summary.group(2)) == 0, f"records failed:\n{log[-3000:]}"
    check = kube.client_pod(f"{name}-verify", ["verify", "-brokers", internal_bootstrap(), "-topic", topic,
                                               "-expect", str(len(sent)), "-timeout", "120s"])
    lost = sent - seen(check)
    assert not lost, f"{len(lost)} acknowledged records missing, e.g. {sorted(lost)[:20]}"
    stalls = re.findall(r"^stall .*$", log, re.M)
    # What the client said besides its acknowledgements: its stalls and franz-go's log.
    story = [line for line in log.splitlines() if not line.startswith("ack ")]
    return {"acked": len(sent), "max_stall_ms": int(summary.group(3)), "stalls": stalls, "story": story}


def test_scale_up_rebalances_onto_new_brokers(kube: Kube):
    start_producer(kube, "e2e-scale-up", "e2e-scale")
    kube.kubectl("scale", "ck", CLUSTER, "--replicas", "5")
    kube.wait_ready(5, timeout=420)
    step("five brokers Ready")

    def rebalanced():
        s = kube.cluster()["status"]
        done = (s.get("lastRebalance") or {}).get("result") == "Succeeded"
        new = [b for b in s.get("brokers", []) if b["id"] in (4, 5)]
        return done and len(new) == 2 and all((b.get("replicas") or 0) > 0 for b in new) and s
    s = kube.wait("the rebalance onto brokers 4 and 5", rebalanced, timeout=420)
    step(f"rebalanced: {[(b['id'], b.get('replicas')) for b in s['brokers']]}")
    result = finish_producer(kube, "e2e-scale-up", "e2e-scale")
    step(f"producer during scale-up: {result['acked']} acknowledged, none lost, longest stall {result['max_stall_ms']} ms")


def test_scale_down_decommissions_before_pods_go(kube: Kube):
    start_producer(kube, "e2e-scale-down", "e2e-scale")
    kube.kubectl("scale", "ck", CLUSTER, "--replicas", "3")
    kube.wait_ready(3, timeout=600)
    # The operator watches broker pods: the status drops the leavers as their pods go,
    # well before its 30 s poll.
    kube.wait("the status to list brokers 1-3 only",
              lambda: sorted(b["id"] for b in kube.cluster()["status"]["brokers"]) == [1, 2, 3],
              timeout=15, interval=1)

    # Every partition lives on the remaining brokers, fully in sync (no replica handed
    # back to a leaving broker while its pod was stopping).
    def settled():
        st = kube.cluster()["status"]
        details = st.get("partitionDetails", [])
        on_leavers = [d for d in details if {4, 5} & set(d["replicas"])]
        return not on_leavers and st["partitions"]["underReplicated"] == 0 and st
    kube.wait("every partition on brokers 1-3 and in sync", settled, timeout=120)
    result = finish_producer(kube, "e2e-scale-down", "e2e-scale")
    step(f"scaled down to 3: {result['acked']} acknowledged during it, none lost")
    # spec.storage.retention.whenScaled is Retain (the default): the volumes stay.
    pvcs = {p["metadata"]["name"] for p in kube.get("pvc")["items"]}
    assert {f"data-{CLUSTER}-4", f"data-{CLUSTER}-5"} <= pvcs, pvcs


def broker_version(kube: Kube, pod: str) -> str:
    """The version a broker reports in chronik_build_info, read through the API server's
    pod proxy."""
    metrics = kube.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9644/proxy/metrics",
                           namespaced=False)
    m = re.search(r'chronik_build_info\{version="([^"]+)"\} 1', metrics)
    return m.group(1) if m else ""


def test_rolling_upgrade_restarts_one_pod_at_a_time(kube: Kube):
    versions = {p["metadata"]["name"]: broker_version(kube, p["metadata"]["name"]) for p in kube.broker_pods()}
    assert len(set(versions.values())) == 1, versions
    old_version = next(iter(versions.values()))
    start_producer(kube, "e2e-upgrade", "e2e-upgrade")
    started = time.monotonic()
    kube.kubectl("patch", "ck", CLUSTER, "--type", "merge", "-p",
                 json.dumps({"spec": {"image": f"chronik-broker:{NEXT_TAG}"}}))
    order: list[str] = []
    down_at_once = 0

    def upgraded():
        nonlocal down_at_once
        pods = kube.broker_pods()
        not_ready = [p["metadata"]["name"] for p in pods if not pod_ready(p)]
        down_at_once = max(down_at_once, len(not_ready) + 3 - len(pods))
        for p in pods:
            name = p["metadata"]["name"]
            if p["spec"]["containers"][0]["image"].endswith(NEXT_TAG) and name not in order:
                order.append(name)
        s = kube.cluster()["status"]
        return (len(pods) == 3 and not not_ready and s.get("currentImage", "").endswith(NEXT_TAG)
                and (s.get("lastUpgrade") or {}).get("result") == "Succeeded")
    kube.wait("the rolling upgrade", upgraded, timeout=900, interval=1)
    per_pod = (time.monotonic() - started) / 3
    assert order == [f"{CLUSTER}-3", f"{CLUSTER}-2", f"{CLUSTER}-1"], order
    assert down_at_once <= 1, f"{down_at_once} brokers were down at once"
    for p in kube.broker_pods():
        v = broker_version(kube, p["metadata"]["name"])
        assert v and v != old_version, f"{p['metadata']['name']} reports {v!r} (was {old_version})"
    result = finish_producer(kube, "e2e-upgrade", "e2e-upgrade")
    step(f"upgraded {old_version} -> {v} in order {order}, {per_pod:.0f}s per pod; "
         f"{result['acked']} acknowledged, none lost; longest produce stall {result['max_stall_ms']} ms")
    if result["max_stall_ms"] > 2_000:
        # (Above the target: what the client saw, for the record.)
        step("stalls over the 2 s target: " + "; ".join(result["stalls"][-5:]))
        for line in result["story"][-30:]:
            step("  client: " + line)
    # The target is 2 s (0.3-0.8 s in most runs). Before leadership hints named the voter
    # taking over, a batch that reached a draining broker after it stopped leading got
    # NOT_LEADER without a KIP-951 hint, and franz-go waited for its next metadata refresh
    # (its 5 s minimum age): 4.0 s and 5.0 s in two of five runs on 2026-12-07; with the
    # hints 0.8 s and 3.5 s in two runs. Beyond that wait and a retry (8 s), something else
    # is wrong.
    assert result["max_stall_ms"] < 8_000, (
        f"longest stall {result['max_stall_ms']} ms: {result['stalls']}; the client's log:\n"
        + "\n".join(result["story"][-80:]))


def test_broker_pod_deleted_and_process_killed(kube: Kube):
    start_producer(kube, "e2e-faults", "e2e-faults")
    victim = f"{CLUSTER}-2"
    kube.kubectl("delete", "pod", victim, "--grace-period=0", "--force")
    step(f"force-deleted {victim}")
    kube.wait_ready(3, timeout=300)
    # SIGKILL of the broker process inside its running pod, through the node's container
    # runtime (the broker image has no shell, and a PID namespace's init ignores SIGKILL
    # sent from inside it).
    victim = f"{CLUSTER}-1"
    status = kube.get("pod", victim)
    restarts = status["status"]["containerStatuses"][0]["restartCount"]
    kube.kill_container(status)
    kube.wait(f"{victim} to restart its broker", lambda: kube.get("pod", victim)["status"]["containerStatuses"][0][
        "restartCount"] > restarts, 120)
    step(f"killed the broker process in {victim}; the kubelet restarted it")
    kube.wait_ready(3, timeout=300)
    kube.wait("every partition back in sync", lambda: (kube.cluster()["status"].get("partitions") or {}).get(
        "underReplicated", 1) == 0, 300)
    result = finish_producer(kube, "e2e-faults", "e2e-faults")
    step(f"faults: {result['acked']} acknowledged, none lost; ISR whole again")


def roll_to(kube: Kube, tag: str) -> None:
    kube.kubectl("patch", "ck", CLUSTER, "--type", "merge", "-p",
                 json.dumps({"spec": {"image": f"chronik-broker:{tag}"}}))


def test_operator_deleted_mid_upgrade_resumes(kube: Kube):
    roll_to(kube, TAG)
    first = f"{CLUSTER}-3"
    kube.wait(f"{first} to run the new image", lambda: (
        (p := kube.get("pod", first))["spec"]["containers"][0]["image"].endswith(f":{TAG}") and pod_ready(p)),
        timeout=420, interval=1)
    operator = kube.get("pods", selector="app.kubernetes.io/name=chronik-operator")["items"][0]["metadata"]["name"]
    kube.kubectl("delete", "pod", operator, "--wait=false")
    step(f"deleted the operator pod {operator} after {first} was upgraded")
    s = kube.wait("the new operator to finish the roll", lambda: (
        (s := kube.cluster()["status"]).get("currentImage", "").endswith(f":{TAG}")
        and (s.get("lastUpgrade") or {}).get("result") == "Succeeded" and s), timeout=900)
    new_operator = kube.get("pods", selector="app.kubernetes.io/name=chronik-operator")["items"][0]["metadata"]["name"]
    assert new_operator != operator
    kube.wait_ready(3)
    step(f"operator {new_operator} resumed and finished the roll")


def test_an_unknown_image_is_degraded_not_broken(kube: Kube):
    roll_to(kube, "no-such-build")

    def degraded():
        conds = {c["type"]: c for c in kube.cluster()["status"].get("conditions", [])}
        d = conds.get("Degraded")
        return d and d["status"] == "True" and d
    # (The broker that stopped for the roll makes partitions under-replicated first; the
    # stalled roll's reason, naming the image, takes over once the pod cannot start.)
    d = kube.wait("the Degraded condition naming the image",
                  lambda: (d := degraded()) and re.search(r"Image|image", d["message"]) and d, timeout=300)
    step(f"Degraded: {d['reason']}: {d['message'][:160]}")
    # The other brokers keep serving.
    log = kube.client_pod("e2e-degraded", ["check", "-brokers", internal_bootstrap(), "-topic", "e2e-degraded",
                                           "-timeout", "120s"])
    assert "ok" in log
    roll_to(kube, TAG)
    kube.wait_ready(3, timeout=420)
    kube.wait("Degraded to clear", lambda: not degraded(), timeout=300)
    step("back on a good image: Ready, Degraded cleared")
