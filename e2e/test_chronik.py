"""Every operator promise against real pods, in order: install, clients inside and outside
the cluster, status in kubectl, and refusal of bad resources. (Scaling, rolling upgrades
and pod faults follow in test_shape.py.)"""

from __future__ import annotations

import json
import re
import time

from conftest import CLUSTER, NAMESPACE, RELEASE, REPO, TAG, Kube, pod_ready, step

CHART = str(REPO / "charts" / "chronik")
TIMES: dict[str, float] = {}
ZONE = "topology.kubernetes.io/zone"


def internal_bootstrap() -> str:
    return f"{CLUSTER}.{NAMESPACE}.svc:9092"


def listener(kube: Kube, name: str) -> str:
    for entry in kube.cluster().get("status", {}).get("listeners", []):
        if entry["name"] == name:
            return entry["bootstrapServers"]
    return ""


def acked(log: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^ack (\d+) ", log, re.M)}


def seen(log: str) -> set[int]:
    out: set[int] = set()
    m = re.search(r"^seen (.*)$", log, re.M)
    for part in (m.group(1).split(",") if m and m.group(1) else []):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def test_helm_lint_and_install_reach_ready(kube: Kube):
    kube.run([kube.helm_bin, "lint", CHART, "--strict"])
    step("helm lint passed")
    # Every pod of the release must pass the `restricted` Pod Security Standard.
    kube.kubectl("create", "namespace", NAMESPACE, check=False, namespaced=False)
    kube.kubectl("label", "--overwrite", "namespace", NAMESPACE,
                 "pod-security.kubernetes.io/enforce=restricted", namespaced=False)
    # Rack awareness from the nodes' zones (kind's workers have theirs; a node without one,
    # as the local node here, gets one).
    for node in kube.get("nodes")["items"]:
        if ZONE not in node["metadata"].get("labels", {}):
            kube.kubectl("label", "node", node["metadata"]["name"], f"{ZONE}=e2e-zone-a", namespaced=False)
    started = time.monotonic()
    kube.helm(
        "install", RELEASE, CHART,
        "--set", f"cluster.rackAwareness.topologyKey={ZONE}",
        "--set", f"operator.image.tag={TAG}",
        "--set", f"cluster.image.tag={TAG}",
        "--set", f"tests.image.tag={TAG}",
        "--set", "cluster.storage.size=1Gi",
        "--set", "cluster.config.default_partitions=3",
        "--set", "cluster.listeners.external.type=NodePort",
    )
    step("helm install done")
    crd = json.loads(kube.kubectl("get", "crd", "chronikclusters.chronik.io", "-o", "json", namespaced=False))
    assert any(v["served"] for v in crd["spec"]["versions"])

    operator = kube.wait("the operator pod to be Ready", lambda: [
        p for p in kube.get("pods", selector="app.kubernetes.io/name=chronik-operator")["items"]
        if pod_ready(p)], timeout=180)[0]
    assert operator["spec"]["serviceAccountName"] == "chronik-operator"
    step(f"operator pod {operator['metadata']['name']} Ready as ServiceAccount chronik-operator")

    kube.wait_ready(3, timeout=420)
    TIMES["install_to_ready_s"] = time.monotonic() - started
    step(f"three brokers Ready {TIMES['install_to_ready_s']:.0f}s after helm install")
    for pod in kube.broker_pods():
        name = pod["metadata"]["name"]
        log = kube.kubectl("logs", name)
        # The peers came from the headless Service's SRV records, served by the cluster DNS.
        assert re.search(r"peers discovered.*_cluster\._tcp\." + CLUSTER + "-headless", log), \
            f"{name} did not discover its peers through DNS SRV:\n{log[-3000:]}"
    step("every broker found its peers through the headless Service's SRV records")


def test_clients_inside_and_outside_the_cluster(kube: Kube):
    log = kube.client_pod("e2e-produce", [
        "produce", "-brokers", internal_bootstrap(), "-topic", "e2e-internal",
        "-rate", "100", "-duration", "10s"])
    sent = acked(log)
    assert len(sent) >= 900, log[-2000:]
    log = kube.client_pod("e2e-verify", [
        "verify", "-brokers", internal_bootstrap(), "-topic", "e2e-internal",
        "-expect", str(len(sent))])
    assert sent <= seen(log), f"acknowledged but not read back: {sorted(sent - seen(log))[:20]}"
    step(f"internal listener: {len(sent)} records produced and read back by client pods")

    external = kube.wait("status.listeners to name three external brokers",
                         lambda: len(listener(kube, "external").split(",")) == 3 and listener(kube, "external"))
    assert listener(kube, "internal") == internal_bootstrap()
    from confluent_kafka import Consumer, Producer
    producer = Producer({"bootstrap.servers": external, "enable.idempotence": True, "acks": "all",
                         "message.timeout.ms": 60000})
    delivered: list[int] = []
    for i in range(200):
        producer.produce("e2e-external", str(i).encode(),
                         on_delivery=lambda err, msg: err is None and delivered.append(int(msg.value())))
    assert producer.flush(90) == 0
    assert len(delivered) == 200
    consumer = Consumer({"bootstrap.servers": external, "group.id": "e2e-external",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["e2e-external"])
    got: set[int] = set()
    deadline = time.monotonic() + 90
    while len(got) < 200 and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is not None and not m.error():
            got.add(int(m.value()))
    consumer.close()
    assert got == set(range(200)), f"missing {sorted(set(range(200)) - got)[:20]}"
    step(f"external listener ({external}): 200 records produced and consumed from the host")

    # Each broker's rack is its node's zone (the rack-init container read the node's label).
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": external})
    racks = {n.id: n.rack for n in admin.describe_cluster(request_timeout=30).result(timeout=60).nodes}
    zones = {node["metadata"]["name"]: node["metadata"]["labels"].get(ZONE)
             for node in kube.get("nodes")["items"]}
    expected = {int(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"]): zones[p["spec"]["nodeName"]]
                for p in kube.broker_pods()}
    assert racks == expected, f"brokers' racks {racks}, their nodes' zones {expected}"
    step(f"every broker's rack is its node's zone: {racks}")


def test_kubectl_shows_brokers_leaders_and_isr(kube: Kube):
    table = kube.kubectl("get", "ck", CLUSTER)
    header = table.splitlines()[0].split()
    for column in ["REPLICAS", "READY", "URP", "PHASE", "IMAGE"]:
        assert column in header, table
    assert "Running" in table, table
    kube.wait("partition details in the status", lambda: kube.cluster()["status"].get("partitionDetails"))
    described = kube.kubectl("describe", "ck", CLUSTER)
    for field in ["Brokers:", "Leaders:", "Partition Details:", "Isr:", "Leader:", "Listeners:", "Bootstrap Servers:"]:
        assert field in described, f"{field} missing from kubectl describe:\n{described}"
    step("kubectl get/describe ck show brokers, leaders, ISR and listeners")
    r = kube.helm("test", RELEASE, "--timeout", "180s")
    assert "Succeeded" in r.stdout or "Phase:          Succeeded" in r.stdout, r.stdout
    step("helm test passed")


def test_bad_clusters_are_refused_with_a_reason(kube: Kube):
    cases = [
        ({"replicas": 0, "image": f"chronik-broker:{TAG}"}, "spec.replicas"),
        ({"replicas": 3, "image": ""}, "spec.image"),
        ({"replicas": 3, "image": f"chronik-broker:{TAG}", "config": {"default_replication_factor": 5}},
         "default_replication_factor must not exceed replicas"),
    ]
    for spec, reason in cases:
        body = {"apiVersion": "chronik.io/v1alpha1", "kind": "ChronikCluster",
                "metadata": {"name": "bad"}, "spec": spec}
        r = kube.run([kube.kubectl_bin, "-n", NAMESPACE, "apply", "-f", "-"], check=False,
                     input=json.dumps(body))
        assert r.returncode != 0 and reason in r.stderr, f"{spec} was not refused with {reason!r}: {r.stderr}"
    step("bad ChronikClusters refused with readable messages")
