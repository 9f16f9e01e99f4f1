//! The image's runtime file list: what the Dockerfile's runtime stage holds is the tree
//! `scripts/image-runtime.sh` makes (the binary, the wheel libraries, torchvision's operators)
//! and the Debian packages of `deploy/image/runtime-packages.txt`. These cases make the tree
//! here, from this build's binary and the venv's torch, and check that every library `ldd`
//! asks for is in it or in one of those packages (or their dependencies), and that a Mask R-CNN
//! model loads from the tree alone. The tree is made of hard links (under the build's target
//! directory, on the venv's file system): the list is what is checked, not the copying.
//!
//! The packages must be installed here (scripts/install-packages.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The GPU driver's library, which the container runtime mounts into a CUDA container.
const DRIVER_LIBRARIES: &[&str] = &["libcuda.so.1"];

/// Makes the runtime tree under `dir` (hard links, not copies) and returns its root.
fn runtime_tree(dir: &Path) -> PathBuf {
    let out = dir.join("tree");
    let output = Command::new(Path::new(ROOT).join("scripts/image-runtime.sh"))
        .args(["--binary", ORSTREAM, "--out"])
        .arg(&out)
        .arg("--link")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/image-runtime.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The packages the runtime stage installs.
fn runtime_packages() -> Vec<String> {
    std::fs::read_to_string(Path::new(ROOT).join("deploy/image/runtime-packages.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `packages` and everything they depend on (Depends and Pre-Depends, recursively), as
/// `apt-get install --no-install-recommends` brings them into the image: of alternatives
/// (`a | b`) the first, a virtual package by the installed package that provides it. Read
/// from the packages installed here.
fn with_dependencies(packages: &[String]) -> BTreeSet<String> {
    let status = run(
        "dpkg-query",
        &[
            "-W",
            "-f=${Package}\t${Depends}, ${Pre-Depends}\t${Provides}\n",
        ],
    );
    let mut depends: HashMap<String, String> = HashMap::new();
    let mut provider: HashMap<String, String> = HashMap::new();
    for line in status.lines() {
        let mut fields = line.split('\t');
        let (Some(name), Some(deps), Some(provides)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        depends.insert(name.to_owned(), deps.to_owned());
        for virtual_name in provides.split(',').filter_map(package_name) {
            provider
                .entry(virtual_name)
                .or_insert_with(|| name.to_owned());
        }
    }
    let installed = |name: &str| -> Option<String> {
        if depends.contains_key(name) {
            Some(name.to_owned())
        } else {
            provider.get(name).cloned()
        }
    };
    let mut closure = BTreeSet::new();
    let mut queue: Vec<String> = packages.to_vec();
    while let Some(package) = queue.pop() {
        if !closure.insert(package.clone()) {
            continue;
        }
        let Some(deps) = depends.get(&package) else {
            continue;
        };
        for group in deps.split(',') {
            if let Some(chosen) = group
                .split('|')
                .filter_map(package_name)
                .find_map(|n| installed(&n))
            {
                queue.push(chosen);
            }
        }
    }
    closure
}

/// The package named in a dependency such as ` libc6:amd64 (>= 2.34)`.
fn package_name(dependency: &str) -> Option<String> {
    let name = dependency.split_whitespace().next()?;
    let name = name.split(':').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Every file the installed packages among `packages` hold, canonical; the names of those
/// not installed here.
fn package_files(packages: &BTreeSet<String>) -> (HashSet<PathBuf>, Vec<String>) {
    let mut files = HashSet::new();
    let mut absent = Vec::new();
    for package in packages {
        let output = Command::new("dpkg-query")
            .args(["-L", package])
            .output()
            .unwrap();
        if !output.status.success() {
            absent.push(package.clone());
            continue;
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let path = Path::new(line);
            files.insert(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
        }
    }
    (files, absent)
}

/// The tree's ELF files: the binary, the libraries, torchvision's operators.
fn elf_files(tree: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(tree.join("MANIFEST"))
        .unwrap()
        .lines()
        .map(|name| tree.join(name))
        .filter(|path| std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x7fELF")))
        .collect()
}

#[test]
fn the_runtime_tree_and_packages_hold_every_library_ldd_asks_for() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = runtime_tree(dir.path());
    let lib = tree.join("lib");
    let packages = runtime_packages();
    let (provided, absent) = package_files(&with_dependencies(&packages));
    let not_here: Vec<&String> = absent.iter().filter(|p| packages.contains(p)).collect();
    assert!(
        not_here.is_empty(),
        "runtime packages not installed here (scripts/install-packages.sh): {not_here:?}"
    );

    let elves = elf_files(&tree);
    assert!(
        elves.iter().any(|p| p.ends_with("bin/orstream"))
            && elves.iter().any(|p| p.ends_with("lib/torchvision/_C.so"))
            && elves.iter().any(|p| p.ends_with("lib/libtorch_cpu.so")),
        "the tree lacks the binary, libtorch or torchvision's operators: {elves:?}"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for elf in &elves {
        let output = Command::new("ldd")
            .arg(elf)
            .env("LD_LIBRARY_PATH", &lib)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "ldd {}: {text}", elf.display());
        let name = elf.strip_prefix(&tree).unwrap().display().to_string();
        for line in text.lines().map(str::trim) {
            // `soname => path (address)`, `soname => not found`, or the loader / vDSO alone.
            let (soname, found) = match line.split_once(" => ") {
                Some((soname, rest)) => (soname, rest.split(" (").next().unwrap_or(rest)),
                None => (line, line.split(" (").next().unwrap_or(line)),
            };
            if soname.starts_with("linux-vdso") || found.is_empty() {
                continue;
            }
            checked += 1;
            if found == "not found" {
                if !DRIVER_LIBRARIES.contains(&soname) {
                    problems.push(format!("{name} asks for {soname}: not found"));
                }
                continue;
            }
            let path = Path::new(found);
            if path.starts_with(&tree) {
                continue;
            }
            let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            if !provided.contains(&canonical) {
                problems.push(format!(
                    "{name} asks for {soname}, found here at {found}, which neither the tree \
                     nor a runtime package (or its dependencies) holds"
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} libraries checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_mask_rcnn_model_loads_from_the_runtime_tree() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = runtime_tree(dir.path());
    // libpython from its Debian package, as the image has it.
    let libpython = run("dpkg-query", &["-L", "libpython3.11"])
        .lines()
        .find(|line| line.ends_with(".so.1.0"))
        .map(PathBuf::from)
        .expect("libpython3.11's shared library");
    // The image's own check configuration, its two library paths pointed at the tree here
    // and at this system's libpython (the image has them at /opt/orstream/lib and /usr/lib).
    let mut command = Command::new(tree.join("bin/orstream"));
    orstream_test_support::process::without_orstream_variables(&mut command);
    let output = command
        .current_dir(ROOT)
        .args([
            "infer",
            "--check",
            "--config",
            "deploy/image/maskrcnn-check.toml",
        ])
        .env(
            "ORSTREAM_INFER_MODEL__TORCHVISION_OPS",
            tree.join("lib/torchvision/_C.so"),
        )
        .env("ORSTREAM_INFER_MODEL__LIBPYTHON", &libpython)
        .env("LD_LIBRARY_PATH", tree.join("lib"))
        .env("LD_DEBUG", "libs")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the tree's binary could not load the Mask R-CNN model: {stdout}\n{}",
        orstream_test_support::service::tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
    assert!(
        stdout.contains("tiny_maskrcnn") && stdout.contains("matches its card"),
        "{stdout}"
    );
    // Every library the process initialised came from the tree or the system, none from the
    // venv the binary was built against (its rpath names it): the loader's own account.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let initialised: Vec<&str> = stderr
        .lines()
        .filter_map(|line| {
            line.split_once("calling init: ")
                .map(|(_, path)| path.trim())
        })
        .collect();
    let tree_text = tree.display().to_string();
    for wanted in [
        "lib/libtorch_cpu.so",
        "lib/libtorch_python.so",
        "lib/torchvision/_C.so",
    ] {
        let path = format!("{tree_text}/{wanted}");
        assert!(
            initialised.contains(&path.as_str()),
            "{path} not loaded: {initialised:?}"
        );
    }
    let venv: Vec<&&str> = initialised
        .iter()
        .filter(|p| p.contains("site-packages"))
        .collect();
    assert!(
        venv.is_empty(),
        "loaded from the venv, not the tree: {venv:?}"
    );
}
