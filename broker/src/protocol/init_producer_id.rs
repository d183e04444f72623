//! InitProducerId: allocates a cluster-unique producer id through the metadata group, so
//! ids are never reused, not even across restarts. Transactions are not offered.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::errors;
use crate::broker::Broker;
use crate::metadata::{Command, Outcome};

pub async fn handle(broker: &Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return response.with_error_code(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    match crate::cluster::propose_metadata(
        broker,
        &Command::AllocateProducerId,
        Duration::from_secs(30),
    )
    .await
    {
        Ok(Outcome::ProducerId(id)) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(_) => response.with_error_code(errors::UNKNOWN_SERVER_ERROR),
        Err(e) => response.with_error_code(errors::for_propose(e)),
    }
}
