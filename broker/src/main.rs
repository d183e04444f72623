//! `chronik-broker`: a Kafka-compatible broker whose partition logs are Raft groups.

use chronik_broker::{app, config::Args};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(app::run(args)) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
