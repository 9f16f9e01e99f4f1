//! Loading torchvision's operator library (`torchvision/_C.so`) into the process, which
//! torchvision detection models (`maskrcnn`) call for `roi_align` and `nms`.
//!
//! The library is a Python extension built against `libtorch_python` and libpython, neither
//! of which a Rust binary links. They are loaded first, in order, with `RTLD_GLOBAL` so that
//! the next one's undefined symbols resolve against them: libpython (path from
//! configuration), then `libtorch_python.so` from the directory of the libtorch this process
//! already runs (found in `/proc/self/maps`, so it is always the matching build), then the
//! operator library, whose static constructors register the ops with libtorch's dispatcher.
//! Nothing is ever unloaded: the registered ops point into the library.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::InferError;

/// Libraries already loaded by this process, so a second replica or worker does not repeat it.
static LOADED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Loads torchvision's operators (and what they need) into the process, once.
pub fn load_torchvision_ops(ops: &Path, libpython: Option<&Path>) -> Result<(), InferError> {
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    let loaded = loaded.get_or_insert_with(HashSet::new);
    if loaded.contains(ops) {
        return Ok(());
    }
    if !ops.is_file() {
        return Err(InferError::Library {
            path: ops.to_path_buf(),
            reason: "no such file (model.torchvision_ops)".to_owned(),
        });
    }
    if let Some(libpython) = libpython {
        open_global(libpython)?;
    }
    if let Some(dir) = libtorch_dir() {
        let python_bindings = dir.join("libtorch_python.so");
        if python_bindings.is_file() {
            open_global(&python_bindings)?;
        }
    }
    open_global(ops)?;
    loaded.insert(ops.to_path_buf());
    Ok(())
}

/// The directory of the `libtorch_cpu.so` mapped into this process.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

fn open_global(path: &Path) -> Result<(), InferError> {
    let error = |reason: String| InferError::Library {
        path: path.to_path_buf(),
        reason,
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| error("the path contains a NUL byte".to_owned()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call. Loading runs
    // the library's constructors, which is the point: these are libtorch / Python libraries
    // of the same build as the libtorch already in the process. The handle is deliberately
    // never closed.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a valid C string owned by the loader, read at once.
        let message = unsafe {
            let text = libc::dlerror();
            if text.is_null() {
                "unknown dlopen error".to_owned()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        return Err(error(message));
    }
    Ok(())
}
