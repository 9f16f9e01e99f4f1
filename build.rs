//! Links libtorch for the `orstream` binary; see `infer/build_support/torch_link.rs`.

include!("infer/build_support/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=infer/build_support/torch_link.rs");
    link_libtorch();
}
