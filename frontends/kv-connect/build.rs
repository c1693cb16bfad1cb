//! Compiles `proto/datapath.proto` with a pure-Rust protobuf compiler (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/datapath.proto");
    let descriptors = protox::compile(["proto/datapath.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
