//! What the load tool's cameras show: JPEG files played in a loop, or synthetic scenes
//! encoded once at start (so the generator spends its time publishing, not encoding).

use std::path::Path;

use anyhow::{Context, Result, bail};
use bytes::Bytes;

/// Distinct synthetic frames encoded per camera; played in a loop.
const SYNTHETIC_FRAMES: u64 = 48;
/// Largest JPEG file taken as a frame.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest picture taken (the contract's largest side, squared).
const MAX_PIXELS: u64 = 16_384 * 16_384;

/// One encoded picture with its size.
#[derive(Debug, Clone)]
pub struct Picture {
    /// The JPEG.
    pub jpeg: Bytes,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
}

/// The pictures every camera plays in a loop, each camera starting `offset` pictures after the
/// one before it, so cameras differ.
#[derive(Debug)]
pub struct Pictures {
    pictures: Vec<Picture>,
    offset: u64,
}

impl Pictures {
    /// Synthetic scenes of `width` x `height` at `quality`, encoded once; each camera starts a
    /// quarter of the loop after the one before it.
    pub fn synthetic(width: u32, height: u32, quality: u8) -> Result<Self> {
        let mut pictures = Vec::new();
        for n in 0..SYNTHETIC_FRAMES {
            let scene = orstream_infer::synthetic::scene(width, height, n);
            let jpeg = orstream_infer::synthetic::encode_jpeg(&scene, quality)
                .map_err(|e| anyhow::anyhow!("encoding a synthetic frame: {e}"))?;
            pictures.push(Picture {
                jpeg: Bytes::from(jpeg),
                width,
                height,
            });
        }
        Ok(Self {
            pictures,
            offset: SYNTHETIC_FRAMES / 4,
        })
    }

    /// The JPEG file `path`, or every `.jpg`/`.jpeg` file of the directory `path` in name
    /// order; every camera plays them all, starting one after the camera before it.
    pub fn files(path: &Path) -> Result<Self> {
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path)
                .with_context(|| format!("reading directory {}", path.display()))?
            {
                let file = entry?.path();
                let is_jpeg = file.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                });
                if is_jpeg {
                    files.push(file);
                }
            }
            files.sort();
        } else {
            files.push(path.to_owned());
        }
        if files.is_empty() {
            bail!("{}: no .jpg or .jpeg files in it", path.display());
        }
        let pictures = files.iter().map(|f| read_jpeg(f)).collect::<Result<_>>()?;
        Ok(Self {
            pictures,
            offset: 1,
        })
    }

    /// The picture camera `camera` shows at frame `seq`.
    pub fn get(&self, camera: u32, seq: u64) -> &Picture {
        let start = u64::from(camera).wrapping_mul(self.offset);
        // Never empty (checked at construction).
        &self.pictures[(seq.wrapping_add(start) % self.pictures.len() as u64) as usize]
    }

    /// Mean JPEG size over every picture, in bytes.
    pub fn mean_bytes(&self) -> u64 {
        let sum: u64 = self.pictures.iter().map(|p| p.jpeg.len() as u64).sum();
        sum.checked_div(self.pictures.len() as u64).unwrap_or(0)
    }
}

/// Reads a JPEG file and its size from its header.
fn read_jpeg(file: &Path) -> Result<Picture> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > MAX_FILE_BYTES {
        bail!(
            "{}: {len} bytes is over the {MAX_FILE_BYTES}-byte limit",
            file.display()
        );
    }
    let jpeg = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let image = orstream_infer::preprocess::decode_jpeg(&jpeg, MAX_PIXELS)
        .map_err(|e| anyhow::anyhow!("{}: not a JPEG the pipeline reads: {e}", file.display()))?;
    Ok(Picture {
        jpeg: Bytes::from(jpeg),
        width: image.width,
        height: image.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_cameras_differ_and_loop() {
        let pictures = Pictures::synthetic(64, 48, 80).expect("encodes");
        assert_ne!(pictures.get(0, 0).jpeg, pictures.get(1, 0).jpeg);
        assert_eq!(
            pictures.get(0, 0).jpeg,
            pictures.get(0, SYNTHETIC_FRAMES).jpeg
        );
        assert_eq!(
            (pictures.get(1, 3).width, pictures.get(1, 3).height),
            (64, 48)
        );
        assert!(pictures.mean_bytes() > 0);
    }

    #[test]
    fn a_file_that_is_not_a_jpeg_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("frame.jpg");
        std::fs::write(&file, b"not a jpeg").expect("write");
        let err = Pictures::files(&file).expect_err("refused");
        assert!(format!("{err:#}").contains("frame.jpg"), "{err:#}");
        let empty = tempfile::tempdir().expect("tempdir");
        let err = Pictures::files(empty.path()).expect_err("refused");
        assert!(format!("{err:#}").contains("no .jpg"), "{err:#}");
    }
}
