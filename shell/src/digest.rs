//! The digest that names a model file in results and frames: `sha256:<hex>` of its bytes.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of the file at `path`, read in 64 KiB pieces.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_files_digest_is_its_sha256() {
        let dir = std::env::temp_dir().join(format!("orstream-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("abc");
        std::fs::write(&path, b"abc").unwrap_or_default();
        assert_eq!(
            super::file_sha256(&path).ok().as_deref(),
            Some("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(super::file_sha256(&dir.join("none")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
