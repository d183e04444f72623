"""A small network of our own for fault injection: one Linux network namespace per broker,
each joined to a bridge in the root namespace by a veth pair, on a test subnet that only
exists on this machine.

Faults on the network are nftables rules inside a broker's namespace (cut off entirely,
cut off from its peers only, or deaf to its peers in one direction) and a token-bucket
filter (tc tbf) that makes its link slow (this kernel has no netem to add fixed delay).

The subnet also gets an `unreachable` route with a high metric, installed before the
bridge and kept after teardown: while the bridge exists its own route wins; once it is
gone no packet to the test subnet can leave this machine, however long a client retries.
"""

from __future__ import annotations

import subprocess

SUBNET = "10.213.7"
PREFIX = 24
BRIDGE = "chaosbr0"
HOST_IP = f"{SUBNET}.1"


def sh(*args: str, check: bool = True, input: str | None = None) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def ns_name(node: int) -> str:
    return f"chaos-b{node}"


def node_ip(node: int) -> str:
    return f"{SUBNET}.{10 + node}"


def _guard_route() -> None:
    routes = sh("ip", "route", "show", "table", "main")
    if f"unreachable {SUBNET}.0/{PREFIX}" not in routes:
        sh("ip", "route", "add", "unreachable", f"{SUBNET}.0/{PREFIX}", "metric", "4000")


class Lab:
    """The bridge and one namespace per node; `close()` removes them (not the guard)."""

    def __init__(self, nodes: list[int]):
        self.nodes = list(nodes)
        self.teardown()  # leftovers of an interrupted run
        _guard_route()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{HOST_IP}/{PREFIX}", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for n in self.nodes:
            self.add_node(n)

    def add_node(self, n: int) -> None:
        ns, host_if = ns_name(n), f"chaos-h{n}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", host_if, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "addr", "add", f"{node_ip(n)}/{PREFIX}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def exec_prefix(self, n: int) -> list[str]:
        return ["ip", "netns", "exec", ns_name(n)]

    # -- faults ---------------------------------------------------------------------
    def _nft(self, n: int, rules: list[str]) -> None:
        script = ["table inet chaos {", "  chain input { type filter hook input priority 0;"]
        script += [f"    {r}" for r in rules if r.startswith("in ")]
        script += ["  }", "  chain output { type filter hook output priority 0;"]
        script += [f"    {r}" for r in rules if r.startswith("out ")]
        script += ["  }", "}"]
        text = "\n".join(script).replace("    in ", "    ").replace("    out ", "    ")
        self.heal(n)
        sh(*self.exec_prefix(n), "nft", "-f", "-", input=text)

    def isolate(self, n: int) -> None:
        """Cut node n off from everyone: peers and clients."""
        self._nft(n, ['in iifname "eth0" drop', 'out oifname "eth0" drop'])

    def isolate_from_peers(self, n: int) -> None:
        """Cut node n off from the other brokers; clients still reach it."""
        peers = ", ".join(node_ip(o) for o in self.nodes if o != n)
        self._nft(n, [f"in ip saddr {{ {peers} }} drop", f"out ip daddr {{ {peers} }} drop"])

    def deafen_to_peers(self, n: int) -> None:
        """Node n hears nothing from its peers, while they still hear it (one direction)."""
        peers = ", ".join(node_ip(o) for o in self.nodes if o != n)
        self._nft(n, [f"in ip saddr {{ {peers} }} drop"])

    def slow(self, n: int, rate: str = "1mbit") -> None:
        """Both directions of node n's link through a token bucket of `rate`."""
        for dev, prefix in (("eth0", self.exec_prefix(n)), (f"chaos-h{n}", [])):
            sh(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
               "burst", "16kb", "latency", "500ms")

    def heal(self, n: int) -> None:
        sh(*self.exec_prefix(n), "nft", "delete", "table", "inet", "chaos", check=False)
        for dev, prefix in (("eth0", self.exec_prefix(n)), (f"chaos-h{n}", [])):
            sh(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    def heal_all(self) -> None:
        for n in self.nodes:
            self.heal(n)

    # -- teardown -------------------------------------------------------------------
    def teardown(self) -> None:
        # Host ends first: a namespace's own devices go away only once the kernel frees
        # the namespace, which can be after `ip netns del` returns.
        for line in sh("ip", "-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith("chaos-h"):
                sh("ip", "link", "del", name, check=False)
        for line in sh("ip", "netns", "list", check=False).splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith("chaos-b"):
                sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)

    def close(self) -> None:
        self.teardown()
