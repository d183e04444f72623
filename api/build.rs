fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/chronik/admin/v1/admin.proto")?;
    Ok(())
}
