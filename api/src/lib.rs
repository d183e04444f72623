//! The gRPC contract of Chronik's admin API, shared by the broker (server) and the
//! operator (client) without linking the broker's storage engine. The service and every
//! message are documented in `proto/chronik/admin/v1/admin.proto`.

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("chronik.admin.v1");
    }
}
