//! Run-length encoding of binary masks ([`RleMask`]): row-major, runs alternate 0 and 1,
//! starting with a (possibly empty) run of 0.

use crate::v1::RleMask;

/// Encodes a row-major mask of `width * height` cells (non-zero = set).
///
/// Returns `None` when `cells.len() != width * height`.
pub fn encode(width: u32, height: u32, cells: &[u8]) -> Option<RleMask> {
    if cells.len() != width as usize * height as usize {
        return None;
    }
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u32;
    for &cell in cells {
        let set = cell != 0;
        if set != current {
            counts.push(run);
            run = 0;
            current = set;
        }
        run += 1;
    }
    counts.push(run);
    Some(RleMask {
        width,
        height,
        counts,
    })
}

/// Checks that the runs cover exactly `width * height` cells.
pub fn check(mask: &RleMask) -> Result<(), String> {
    let cells = u64::from(mask.width) * u64::from(mask.height);
    let total: u64 = mask.counts.iter().map(|&c| u64::from(c)).sum();
    if total != cells {
        return Err(format!(
            "runs cover {total} cells, mask is {}x{} = {cells}",
            mask.width, mask.height
        ));
    }
    Ok(())
}

/// Decodes a mask into row-major cells (1 = set), after [`check`]ing it.
pub fn decode(mask: &RleMask) -> Result<Vec<u8>, String> {
    check(mask)?;
    let mut cells = Vec::with_capacity(mask.width as usize * mask.height as usize);
    let mut value = 0u8;
    for &run in &mask.counts {
        cells.resize(cells.len() + run as usize, value);
        value ^= 1;
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_with_zero_run() {
        let mask = encode(3, 1, &[1, 1, 0]).unwrap();
        assert_eq!(mask.counts, vec![0, 2, 1]);
    }

    #[test]
    fn wrong_cell_count_is_refused() {
        assert!(encode(2, 2, &[0, 1, 0]).is_none());
        let bad = RleMask {
            width: 2,
            height: 2,
            counts: vec![1, 1],
        };
        assert!(check(&bad).unwrap_err().contains("cover 2 cells"));
    }

    proptest! {
        #[test]
        fn round_trip(width in 1u32..40, height in 1u32..40, seed in any::<u64>()) {
            let n = (width * height) as usize;
            let cells: Vec<u8> = (0..n).map(|i| ((seed >> (i % 64)) & 1) as u8).collect();
            let mask = encode(width, height, &cells).unwrap();
            prop_assert_eq!(decode(&mask).unwrap(), cells);
        }
    }
}
