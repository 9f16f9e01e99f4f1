//! Compiles the `.proto` contract into OUT_DIR with a pure-Rust protobuf compiler (no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/orstream/v1/orstream.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    prost_build::Config::new()
        .bytes([".orstream.v1.Frame.data"])
        .compile_fds(descriptors)?;
    Ok(())
}
