// Link settings for libtorch that every binary using orstream-infer needs. Included with
// `include!` by infer/build.rs and by the root package's build.rs, because the linker arguments
// a build script emits (`cargo:rustc-link-arg`) apply only to that package's own binaries, tests
// and examples: they do not reach the binaries of packages that depend on it.
//
// What it adds on top of torch-sys (the `tch` crate's build script, which links libtorch itself):
// - `libtorch_cuda` kept as a dependency. torch-sys links it with a plain `-l`, and the linker's
//   `--as-needed` drops it because no symbol is used from it directly; CUDA then reports itself
//   unavailable at run time. `--no-as-needed` around it keeps it.
// - an rpath to the libtorch directory, so the binaries find libtorch without LD_LIBRARY_PATH.
//
// The libtorch directory is found the way torch-sys finds it:
// - LIBTORCH_USE_PYTORCH set: ask Python where `torch` is installed; the interpreter is $PYTHON
//   if set, else `python` inside an activated virtualenv (VIRTUAL_ENV set), else `python3`.
// - else LIBTORCH (or LIBTORCH_LIB, if set) names the libtorch directory; its `lib/` is used.
// - else a system-wide /usr/lib/libtorch.so; else Python is asked as above, as the last resort.

/// Emits the cargo instructions that link libtorch (with its CUDA library kept) and set an rpath.
fn link_libtorch() {
    for var in [
        "LIBTORCH",
        "LIBTORCH_LIB",
        "LIBTORCH_USE_PYTORCH",
        "PYTHON",
        "VIRTUAL_ENV",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The flags below are GNU ld / lld flags and the file names Linux ones.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let lib_dir = libtorch_lib_dir();
    if !lib_dir.join("libtorch_cpu.so").is_file() {
        panic!(
            "no libtorch_cpu.so in {}; {}",
            lib_dir.display(),
            LIBTORCH_HELP
        );
    }
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").is_file() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// What to do when libtorch cannot be found; part of every panic message below.
const LIBTORCH_HELP: &str = "libtorch comes from the `torch` wheel in the project's venv: run \
    scripts/install-python.sh (it makes .venv/torch, which .cargo/config.toml gives as LIBTORCH); \
    or set LIBTORCH to a libtorch directory (one holding lib/libtorch.so), or set \
    LIBTORCH_USE_PYTORCH=1 with a Python that imports torch first on PATH";

/// The directory holding libtorch.so, libtorch_cpu.so and (CUDA builds) libtorch_cuda.so.
fn libtorch_lib_dir() -> std::path::PathBuf {
    let use_pytorch = std::env::var_os("LIBTORCH_USE_PYTORCH").is_some();
    if !use_pytorch {
        if let Some(lib) = std::env::var_os("LIBTORCH_LIB") {
            return std::path::PathBuf::from(lib).join("lib");
        }
        if let Some(root) = std::env::var_os("LIBTORCH") {
            return std::path::PathBuf::from(root).join("lib");
        }
        let system = std::path::Path::new("/usr/lib");
        if system.join("libtorch.so").is_file() {
            return system.to_path_buf();
        }
    }
    python_torch_lib_dir()
}

/// Asks Python for `<torch package>/lib`, the directory torch-sys links against.
fn python_torch_lib_dir() -> std::path::PathBuf {
    let python = match std::env::var_os("PYTHON") {
        Some(python) => python,
        None if std::env::var_os("VIRTUAL_ENV").is_some() => "python".into(),
        None => "python3".into(),
    };
    let shown = std::path::Path::new(&python).display().to_string();
    let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let output = match std::process::Command::new(&python)
        .args(["-c", script])
        .output()
    {
        Ok(output) => output,
        Err(err) => panic!("cannot run `{shown}` to find libtorch: {err}; {LIBTORCH_HELP}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no error output");
        panic!("`{shown}` cannot import torch ({last}); {LIBTORCH_HELP}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last().map(str::trim) {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => panic!("`{shown}` printed no torch directory; {LIBTORCH_HELP}"),
    }
}
