//! Prints the ChronikCluster CustomResourceDefinition:
//! `cargo run --release --bin crdgen > crds/chronikcluster.yaml`.

fn main() {
    print!("{}", chronik_operator::crd::crd_yaml());
}
