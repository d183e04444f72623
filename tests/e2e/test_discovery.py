"""Peer discovery through DNS SRV records (--peer-srv), as a Kubernetes headless Service
publishes them: a real DNS server (dnslib) answers SRV and A records, and chronik-brokers
given no --peers find each other, bootstrap one cluster, and let a later broker join."""

import time

import pytest
from conftest import ChronikBroker, free_port
from dnslib import QTYPE, RR, A, SRV
from dnslib.server import BaseResolver, DNSServer
from kafkautil import admin, confluent_read_all
from test_replication import create_replicated, produce_acked

SRV_NAME = "_cluster._tcp.chronik-headless.test."


class Records(BaseResolver):
    """SRV targets `chronik-<id>.chronik-headless.test.` on each broker's cluster port, and
    A records for them (127.0.0.1). Brokers can be added while it runs."""

    def __init__(self):
        self.brokers: dict[int, int] = {}  # node id -> cluster port

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname)
        if request.q.qtype == QTYPE.SRV and name == SRV_NAME:
            for node, port in sorted(self.brokers.items()):
                target = f"chronik-{node}.chronik-headless.test."
                reply.add_answer(RR(name, QTYPE.SRV, ttl=1, rdata=SRV(0, 0, port, target)))
        elif request.q.qtype == QTYPE.A and name.startswith("chronik-"):
            reply.add_answer(RR(name, QTYPE.A, ttl=1, rdata=A("127.0.0.1")))
        return reply


@pytest.fixture
def dns():
    records = Records()
    port = free_port()
    server = DNSServer(records, port=port, address="127.0.0.1")
    server.start_thread()
    yield records, f"127.0.0.1:{port}"
    server.stop()


def test_brokers_find_each_other_through_srv_records(dns, tmp_path_factory, request, topic_name):
    records, dns_addr = dns
    brokers = []

    def broker(node):
        b = ChronikBroker(tmp_path_factory.mktemp(f"srv{node}"), node_id=node)
        b.extra_args = ["--peer-srv", SRV_NAME, "--dns-server", dns_addr]
        records.brokers[node] = b.cluster_port
        request.addfinalizer(b.stop)
        brokers.append(b)
        return b

    first = [broker(n) for n in (1, 2, 3)]
    for b in first:
        b.launch()
    for b in first:
        b.wait_ready(30)
    md = admin(first[0].bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    create_replicated(first, topic_name, 3)
    acked, errors = produce_acked(first[1].bootstrap, topic_name, [b"srv-%d" % i for i in range(200)])
    assert len(acked) == 200 and not errors

    # A fourth broker appears in DNS and joins the running cluster.
    fourth = broker(4)
    fourth.start()
    deadline = time.monotonic() + 20
    while sorted(admin(first[0].bootstrap).list_topics(timeout=10).brokers) != [1, 2, 3, 4]:
        assert time.monotonic() < deadline, "broker 4 never registered"
        time.sleep(0.3)
    got = confluent_read_all(fourth.bootstrap, topic_name, expected=200)
    assert sorted(r.value for r in got) == sorted(acked)
