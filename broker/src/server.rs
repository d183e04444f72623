//! A Kafka listener (internal or external): accepts connections and gives each its own
//! task.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::connection;
use crate::protocol::Listener;
use crate::shutdown::Shutdown;

pub async fn serve(listener: TcpListener, kind: Listener, broker: Arc<Broker>, shutdown: Shutdown) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        connection::run(socket, peer, kind, broker, shutdown).await;
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.clone().wait() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}
