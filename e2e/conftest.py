"""The e2e suite's view of a Kubernetes cluster: kubectl and helm against KUBECONFIG, and
one release of charts/chronik installed for the whole session (the scenarios build on each
other, in file order)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = os.environ.get("E2E_NAMESPACE", "chronik-e2e")
RELEASE = "chronik"
CLUSTER = "chronik"


def workspace_version() -> str:
    for line in (REPO / "Cargo.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split('"')[1]
    raise RuntimeError("no version in Cargo.toml")


TAG = os.environ.get("CHRONIK_TAG") or workspace_version()


def tool(name: str) -> str:
    explicit = os.environ.get(name.upper())
    if explicit:
        return explicit
    local = REPO / ".k8s" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not on PATH (set {name.upper()})")
    return found


def step(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Kube:
    """kubectl and helm in the suite's namespace."""

    def __init__(self) -> None:
        self.kubectl_bin = tool("kubectl")
        self.helm_bin = tool("helm")
        self.ns = NAMESPACE

    def run(self, argv: list[str], check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None, namespaced: bool = True) -> str:
        argv = [self.kubectl_bin] + (["-n", self.ns] if namespaced else []) + list(args)
        return self.run(argv, check=check, timeout=timeout, input=input).stdout

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run([self.helm_bin, "-n", self.ns] + list(args), check=check, timeout=timeout)

    def get(self, kind: str, name: str | None = None, selector: str | None = None) -> dict:
        args = ["get", kind] + ([name] if name else []) + (["-l", selector] if selector else []) + ["-o", "json"]
        return json.loads(self.kubectl(*args))

    def cluster(self) -> dict:
        return self.get("chronikcluster", CLUSTER)

    def broker_pods(self) -> list[dict]:
        pods = self.get("pods", selector=f"app.kubernetes.io/name=chronik,app.kubernetes.io/instance={CLUSTER}")["items"]
        return sorted(pods, key=lambda p: int(p["metadata"]["labels"].get("apps.kubernetes.io/pod-index", "0")))

    def wait(self, what: str, check, timeout: float = 300, interval: float = 2):
        """Polls `check` until it returns something truthy; fails with `what` and the last
        value seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (AssertionError, json.JSONDecodeError, KeyError, subprocess.TimeoutExpired) as e:
                last = e
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")

    def wait_ready(self, replicas: int, timeout: float = 300) -> dict:
        def ready():
            c = self.cluster()
            s = c.get("status", {})
            cond = {x["type"]: x["status"] for x in s.get("conditions", [])}
            pods = self.broker_pods()
            return c if (
                s.get("readyReplicas") == replicas
                and cond.get("Ready") == "True"
                and len(pods) == replicas
                and all(pod_ready(p) for p in pods)
            ) else None
        return self.wait(f"{replicas} Ready brokers", ready, timeout)

    def start_client_pod(self, name: str, args: list[str]) -> None:
        """Starts kclient (e2e/kclient) in a pod of its own."""
        self.kubectl("delete", "pod", name, "--ignore-not-found", "--wait=true")
        overrides = {"apiVersion": "v1", "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": name, "image": f"chronik-kclient:{TAG}",
                            "imagePullPolicy": "IfNotPresent", "command": ["kclient"] + args,
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}}]}}
        self.kubectl("run", name, f"--image=chronik-kclient:{TAG}", "--restart=Never",
                     f"--overrides={json.dumps(overrides)}")

    def finish_client_pod(self, name: str, timeout: float = 300) -> str:
        """Waits for a client pod to end; returns its log, failing if it failed."""
        phase = self.wait(f"client pod {name} to finish", lambda: (
            self.get("pod", name)["status"].get("phase") in ("Succeeded", "Failed")
            and self.get("pod", name)["status"]["phase"]), timeout)
        log = self.kubectl("logs", name)
        assert phase == "Succeeded", f"{name} {phase}:\n{log[-4000:]}"
        return log

    def client_pod(self, name: str, args: list[str], timeout: float = 300) -> str:
        """Runs kclient in a pod to completion and returns its log."""
        self.start_client_pod(name, args)
        return self.finish_client_pod(name, timeout)


    def kill_container(self, pod: dict) -> None:
        """SIGKILLs a pod's first container's process (see `signal_container`)."""
        self.signal_container(pod, "SIGKILL")

    def signal_container(self, pod: dict, signal_name: str) -> None:
        """Sends a signal to a pod's first container's process through its node's
        containerd: E2E_SIGNAL_CONTAINER is the command, with {signal}, {node} and {id}
        filled in (kind/run.sh sets `docker exec {node} ctr -n k8s.io task kill -s {signal}
        {id}`); the local node of `make k8s-up` is this machine."""
        container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        node = pod["spec"]["nodeName"]
        template = os.environ.get("E2E_SIGNAL_CONTAINER") or (
            f"ctr -a {REPO}/.k8s/containerd/containerd.sock -n k8s.io task kill -s {{signal}} {{id}}")
        argv = [a.format(node=node, id=container_id, signal=signal_name) for a in template.split()]
        self.run(argv)


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def remove_release(k: Kube) -> None:
    k.helm("uninstall", RELEASE, "--wait", check=False)
    k.kubectl("delete", "namespace", k.ns, "--ignore-not-found", "--wait=true", "--timeout=300s",
              check=False, namespaced=False)


@pytest.fixture(scope="session")
def kube() -> Kube:
    k = Kube()
    step(f"cluster: {k.kubectl('config', 'current-context', namespaced=False).strip()}, namespace {k.ns}, images :{TAG}")
    # A namespace left by an interrupted run (or E2E_KEEP) would hold the release's name.
    if k.kubectl("get", "namespace", k.ns, "--ignore-not-found", "-o", "name", namespaced=False).strip():
        step(f"removing namespace {k.ns} left by an earlier run")
        remove_release(k)
    yield k
    if not os.environ.get("E2E_KEEP"):
        step("uninstalling the release and deleting the namespace")
        remove_release(k)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a scenario fails, keeps every pod's log of the namespace (and the previous
    container's, after a restart) under E2E_LOGS (default /tmp/chronik-e2e-logs/<test>),
    before the namespace is deleted."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    out = Path(os.environ.get("E2E_LOGS", "/tmp/chronik-e2e-logs")) / item.name
    try:
        k = Kube()
        out.mkdir(parents=True, exist_ok=True)
        pods = json.loads(k.kubectl("get", "pods", "-o", "json"))["items"]
        for p in pods:
            name = p["metadata"]["name"]
            for previous in (False, True):
                log = k.kubectl("logs", name, "--all-containers", *(["--previous"] if previous else []),
                                check=False, timeout=60)
                if log:
                    (out / f"{name}{'.previous' if previous else ''}.log").write_text(log)
        step(f"pod logs of the failed scenario kept in {out}")
    except Exception as e:  # the report of the failure itself matters more
        step(f"could not keep the pod logs: {e}")
