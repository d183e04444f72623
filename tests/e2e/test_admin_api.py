"""The gRPC admin API on --cluster-addr, called with a client generated from the proto the
broker is built from (api/proto/chronik/admin/v1/admin.proto)."""

import grpc
import pytest
from kafkautil import admin_stub as stub_for
from kafkautil import confluent_produce, create_topic, make_records

def test_cluster_status_reports_partitions_leaders_and_isr(chronik_broker, topic_name, admin_pb):
    pb, _ = admin_pb
    b = chronik_broker
    create_topic(b.bootstrap, topic_name, 3)
    confluent_produce(b.bootstrap, topic_name, make_records(30, "admin"))
    admin = stub_for(b, admin_pb)

    status = admin.ClusterStatus(pb.ClusterStatusRequest(include_partitions=True), timeout=10)
    assert status.node_id == b.node_id
    assert [br.node_id for br in status.brokers] == [b.node_id]
    me = status.brokers[0]
    assert me.ready and me.kafka_endpoint == b.bootstrap
    mine = [p for p in status.partitions if p.topic == topic_name]
    assert sorted(p.partition for p in mine) == [0, 1, 2]
    for p in mine:
        assert p.leader == b.node_id and list(p.replicas) == [b.node_id] and list(p.isr) == [b.node_id]
        assert p.leader_epoch >= 1
    assert sum(p.high_watermark for p in mine) == 30
    assert status.summary.total == len(status.partitions)
    assert (status.summary.under_replicated, status.summary.offline, status.summary.leaderless) == (0, 0, 0)
    assert me.leader_count == me.replica_count == status.summary.total

    brief = admin.ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    assert not brief.partitions and brief.summary.total == status.summary.total


def test_restart_gates_and_drain_on_a_single_node(chronik_broker, topic_name, admin_pb):
    pb, _ = admin_pb
    b = chronik_broker
    create_topic(b.bootstrap, topic_name, 2)
    admin = stub_for(b, admin_pb)
    Phase = pb.RestartCheckRequest.Phase

    # Every partition has its only voter on this node: restarting it loses their quorum.
    pre = admin.RestartCheck(pb.RestartCheckRequest(node_id=b.node_id, phase=Phase.PRE), timeout=10)
    assert not pre.safe
    assert pre.blocking_partitions >= 2
    assert any(topic_name in r for r in pre.reasons)
    post = admin.RestartCheck(pb.RestartCheckRequest(node_id=b.node_id, phase=Phase.POST), timeout=10)
    assert post.safe and post.blocking_partitions == 0

    drain = admin.DrainLeadership(pb.DrainLeadershipRequest(node_id=b.node_id), timeout=10)
    assert drain.transferred == 0 and drain.remaining >= 2
    # Each broker drains itself: another node's id is refused with a readable reason.
    with pytest.raises(grpc.RpcError) as err:
        admin.DrainLeadership(pb.DrainLeadershipRequest(node_id=b.node_id + 1), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"node {b.node_id + 1}" in err.value.details()

    with pytest.raises(grpc.RpcError) as err:
        admin.RestartCheck(pb.RestartCheckRequest(node_id=b.node_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # One broker is balanced already; it cannot be decommissioned (nowhere to go).
    admin.Rebalance(pb.RebalanceRequest(), timeout=10)
    assert admin.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done
    with pytest.raises(grpc.RpcError) as err:
        admin.Decommission(pb.DecommissionRequest(node_id=b.node_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
