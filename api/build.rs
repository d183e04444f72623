fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/chronik/admin/v1/admin.proto")?;
    tonic_prost_build::compile_protos("proto/chronik/cluster/v1/cluster.proto")?;
    Ok(())
}
