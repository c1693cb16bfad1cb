//! With the `sync` feature: compiles `proto/sync.proto` with a pure-Rust protobuf compiler
//! (no `protoc` needed) into the gRPC service and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sync.proto");
    #[cfg(feature = "sync")]
    {
        let descriptors = protox::compile(["proto/sync.proto"], ["proto"])?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
