//! Compiles `proto/kiroku/v1/*.proto` with protox (pure Rust, no system
//! protoc) and generates prost messages plus tonic clients and servers.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["kiroku/v1/kiroku.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by the collector's reflection service.
    std::fs::write(out_dir.join("kiroku_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // JSON output of the CLI (`--json`) uses the proto field names.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
