//! Chronik's gRPC contracts: the admin API shared by the broker (server) and the operator
//! (client) without linking the broker's storage engine
//! (`proto/chronik/admin/v1/admin.proto`), and the broker-to-broker cluster service that
//! carries Raft traffic (`proto/chronik/cluster/v1/cluster.proto`).

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("chronik.admin.v1");
    }
}

pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("chronik.cluster.v1");
    }
}
