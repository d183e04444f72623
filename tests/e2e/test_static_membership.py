"""Static membership: a consumer that restarts with the same group.instance.id within its
session timeout gets its partitions back without rebalancing the rest of the group."""

import time

from confluent_kafka import Consumer
from kafkautil import confluent_produce, create_topic, make_records

PARTITIONS = 4


class Member:
    def __init__(self, bootstrap, group, topic, instance):
        self.assigns = 0
        self.revokes = 0
        self.assignment = set()
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": 30000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assigns += 1
        self.assignment = {p.partition for p in partitions}

    def _on_revoke(self, consumer, partitions):
        self.revokes += 1

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.c.poll(0.1)


def test_static_member_rejoins_without_rebalance(broker):
    topic = f"static-{int(time.time() * 1000)}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    confluent_produce(broker.bootstrap, topic, make_records(20, "static"))
    group = f"g-{topic}"

    a = Member(broker.bootstrap, group, topic, "instance-a")
    b = Member(broker.bootstrap, group, topic, "instance-b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a.poll(0.5)
        b.poll(0.5)
        if a.assignment and b.assignment and len(a.assignment | b.assignment) == PARTITIONS:
            break
    assert a.assignment and b.assignment, (a.assignment, b.assignment)
    assert a.assignment.isdisjoint(b.assignment)
    a_assigns, a_revokes = a.assigns, a.revokes
    b_before = set(b.assignment)

    # b's process goes away (a static member's close sends no LeaveGroup) and comes back
    b.c.close()
    b2 = Member(broker.bootstrap, group, topic, "instance-b")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not b2.assignment:
        b2.poll(0.5)
        a.poll(0.2)
    a.poll(3)
    assert b2.assignment == b_before, "the static member did not get its partitions back"
    assert (a.assigns, a.revokes) == (a_assigns, a_revokes), "the other member was rebalanced"
    a.c.close()
    b2.c.close()
