//! Links libtorch for this crate's tests and examples; see `build_support/torch_link.rs`.

include!("build_support/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support/torch_link.rs");
    link_libtorch();
}
