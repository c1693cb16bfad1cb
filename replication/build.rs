//! Compiles `proto/raft.proto` with a pure-Rust protobuf compiler (no `protoc` needed) into
//! the gRPC service and client that carry Raft between nodes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/raft.proto");
    let descriptors = protox::compile(["proto/raft.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
