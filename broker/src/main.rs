//! `chronik-broker`: a Kafka-compatible broker whose partition logs are Raft groups.

use chronik_broker::{app, config::Args};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    if let Some(v) = option_env!("CHRONIK_BUILD_VERSION").filter(|v| !v.is_empty()) {
        chronik_broker::set_version(v);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .init();
    exit_on_panic();
    // Fault injection for tests (`FAILPOINTS=raft-log-writer=sleep(200)`); inert unless set.
    let _failpoints = fail::FailScenario::setup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(app::run(args)) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

/// A panic on any thread ends the broker at once, with a log line naming the thread. A
/// panic means state that can no longer be trusted (a Raft group half-advanced, a poisoned
/// lock, a driver thread gone): living on would leave a broker that still answers probes
/// but cannot serve. Its supervisor restarts it from the durable log instead.
fn exit_on_panic() {
    let print_backtrace = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, "panic: {info}; the broker stops");
        print_backtrace(info);
        std::process::abort();
    }));
}
