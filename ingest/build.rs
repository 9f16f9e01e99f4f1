//! Links libtorch for this crate's tests and benches (the privacy gate runs a TorchScript
//! model); see `infer/build_support/torch_link.rs`.

include!("../infer/build_support/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../infer/build_support/torch_link.rs");
    link_libtorch();
}
