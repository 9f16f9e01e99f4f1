//! Model output -> `Instance`s: bounding box, centroid and area in normalised image units
//! (0..1 of the image, whatever the model's input size), a score, and an RLE mask at the
//! configured resolution covering the whole image.
//!
//! - semantic: the per-pixel class map (argmax) is split into 8-connected components per
//!   class; background classes and blobs under `min_area` are dropped; the score is the mean
//!   probability of the class over the blob.
//! - maskrcnn: each detection over `min_score` with a known, non-background label; its mask
//!   is thresholded at `mask_threshold`, area and centroid come from the mask, the box from
//!   the detector.
//!
//! Everything here works on plain slices already copied off the device, so it is tested
//! without libtorch.

use orstream_proto::{BBox, Instance, Point, rle};

use crate::card::{ClassCategory, ModelCard};
use crate::config::PostprocessConfig;

/// A class map of one image, at the model's output resolution, with the image's content
/// rectangle in it (letterbox padding excluded).
#[derive(Debug, Clone, Copy)]
pub struct ClassMap<'a> {
    /// Class id per cell, row-major, `width * height`.
    pub classes: &'a [i32],
    /// Probability of the chosen class per cell.
    pub scores: &'a [f32],
    /// Map width.
    pub width: usize,
    /// Map height.
    pub height: usize,
    /// Content rectangle `(x0, y0, x1, y1)`, end exclusive.
    pub region: (usize, usize, usize, usize),
}

/// Statistics of one connected component.
#[derive(Debug, Clone, Default)]
struct Blob {
    class: i32,
    count: u64,
    sum_x: u64,
    sum_y: u64,
    score: f64,
    min_x: usize,
    min_y: usize,
    max_x: usize,
    max_y: usize,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

/// Whether a class id becomes instances: known to the card and not background.
fn finding(card: &ModelCard, class: i32) -> bool {
    u32::try_from(class)
        .ok()
        .and_then(|id| card.class(id))
        .is_some_and(|c| c.category != ClassCategory::Background)
}

fn instance(card: &ModelCard, class: u32, score: f32) -> Instance {
    let info = card.class(class);
    Instance {
        class_id: class,
        label: info.map(|c| c.name.clone()).unwrap_or_default(),
        category: info
            .map(|c| c.category.to_proto())
            .unwrap_or(orstream_proto::Category::Other) as i32,
        score,
        ..Instance::default()
    }
}

/// Samples a region of a row-major map into a `mask_w` x `mask_h` grid (nearest cell) and
/// run-length encodes the cells for which `member` holds.
fn sample_mask(
    region: (usize, usize, usize, usize),
    map_w: usize,
    mask_w: u32,
    mask_h: u32,
    member: impl Fn(usize) -> bool,
) -> orstream_proto::RleMask {
    let (x0, y0, x1, y1) = region;
    let (rw, rh) = (x1 - x0, y1 - y0);
    let (mw, mh) = (mask_w as usize, mask_h as usize);
    let columns: Vec<usize> = (0..mw)
        .map(|mx| x0 + ((mx * 2 + 1) * rw / (mw * 2)).min(rw - 1))
        .collect();
    let mut cells = vec![0u8; mw * mh];
    for my in 0..mh {
        let y = y0 + ((my * 2 + 1) * rh / (mh * 2)).min(rh - 1);
        for (mx, x) in columns.iter().enumerate() {
            cells[my * mw + mx] = u8::from(member(y * map_w + x));
        }
    }
    // The length always matches: the grid is mask_w * mask_h.
    rle::encode(mask_w, mask_h, &cells).unwrap_or_default()
}

/// Instances of a semantic class map: one per 8-connected blob of a non-background class.
pub fn semantic_instances(
    map: &ClassMap<'_>,
    card: &ModelCard,
    config: &PostprocessConfig,
) -> Vec<Instance> {
    let (x0, y0, x1, y1) = map.region;
    let (rw, rh) = (x1 - x0, y1 - y0);
    if rw == 0 || rh == 0 || map.classes.len() < map.width * map.height {
        return Vec::new();
    }
    let at = |x: usize, y: usize| (y0 + y) * map.width + (x0 + x);
    // Two-pass labelling with union-find over the region; NONE marks cells that are no finding.
    const NONE: u32 = u32::MAX;
    let mut labels = vec![NONE; rw * rh];
    let mut parent: Vec<u32> = Vec::new();
    for y in 0..rh {
        for x in 0..rw {
            let class = map.classes[at(x, y)];
            if !finding(card, class) {
                continue;
            }
            let mut label = NONE;
            // Already visited 8-neighbours: W, NW, N, NE.
            let neighbours = [
                (x.checked_sub(1), Some(y)),
                (x.checked_sub(1), y.checked_sub(1)),
                (Some(x), y.checked_sub(1)),
                ((x + 1 < rw).then_some(x + 1), y.checked_sub(1)),
            ];
            for (nx, ny) in neighbours {
                let (Some(nx), Some(ny)) = (nx, ny) else {
                    continue;
                };
                let other = labels[ny * rw + nx];
                if other == NONE || map.classes[at(nx, ny)] != class {
                    continue;
                }
                if label == NONE {
                    label = other;
                } else if label != other {
                    union(&mut parent, label, other);
                }
            }
            if label == NONE {
                label = u32::try_from(parent.len()).unwrap_or(NONE - 1);
                parent.push(label);
            }
            labels[y * rw + x] = label;
        }
    }
    // Second pass: resolve roots and gather statistics per root.
    let mut blobs: Vec<Option<Blob>> = vec![None; parent.len()];
    for y in 0..rh {
        for x in 0..rw {
            let label = labels[y * rw + x];
            if label == NONE {
                continue;
            }
            let root = find(&mut parent, label);
            labels[y * rw + x] = root;
            let blob = blobs[root as usize].get_or_insert_with(|| Blob {
                class: map.classes[at(x, y)],
                min_x: x,
                min_y: y,
                max_x: x,
                max_y: y,
                ..Blob::default()
            });
            blob.count += 1;
            blob.sum_x += x as u64;
            blob.sum_y += y as u64;
            blob.score += f64::from(map.scores.get(at(x, y)).copied().unwrap_or(0.0));
            blob.min_x = blob.min_x.min(x);
            blob.min_y = blob.min_y.min(y);
            blob.max_x = blob.max_x.max(x);
            blob.max_y = blob.max_y.max(y);
        }
    }
    let total = (rw * rh) as f64;
    let mut kept: Vec<(u32, Blob)> = blobs
        .into_iter()
        .enumerate()
        .filter_map(|(root, blob)| Some((u32::try_from(root).ok()?, blob?)))
        .filter(|(_, b)| b.count as f64 / total >= f64::from(config.min_area))
        .collect();
    kept.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
    kept.truncate(config.max_instances);
    kept.into_iter()
        .map(|(root, b)| {
            let n = b.count as f64;
            let mut inst = instance(card, b.class.max(0) as u32, (b.score / n) as f32);
            inst.bbox = Some(BBox {
                x0: (b.min_x as f64 / rw as f64) as f32,
                y0: (b.min_y as f64 / rh as f64) as f32,
                x1: ((b.max_x + 1) as f64 / rw as f64) as f32,
                y1: ((b.max_y + 1) as f64 / rh as f64) as f32,
            });
            inst.area = (n / total) as f32;
            inst.centroid = Some(Point {
                x: ((b.sum_x as f64 / n + 0.5) / rw as f64) as f32,
                y: ((b.sum_y as f64 / n + 0.5) / rh as f64) as f32,
            });
            let labels = &labels;
            inst.mask = Some(sample_mask(
                (0, 0, rw, rh),
                rw,
                config.mask_width,
                config.mask_height,
                |i| labels[i] == root,
            ));
            inst
        })
        .collect()
}

/// One detection of a maskrcnn model, already on the CPU.
#[derive(Debug, Clone)]
pub struct Detection<'a> {
    /// `[x0, y0, x1, y1]` in model input pixels.
    pub bbox: [f32; 4],
    /// Class label.
    pub label: i64,
    /// Detection score.
    pub score: f32,
    /// Binary mask at the model input size (`input_width * input_height`, 1 = in).
    pub mask: &'a [u8],
}

/// The instance of one detection, or `None` when it is dropped (unknown or background label,
/// low score, mask too small).
pub fn detection_instance(
    det: &Detection<'_>,
    placement: &crate::preprocess::Placement,
    card: &ModelCard,
    config: &PostprocessConfig,
) -> Option<Instance> {
    if det.score < config.min_score || !finding(card, i32::try_from(det.label).ok()?) {
        return None;
    }
    let (iw, ih) = (
        placement.input_width as usize,
        placement.input_height as usize,
    );
    if det.mask.len() < iw * ih {
        return None;
    }
    let region = placement.in_map(iw, ih);
    let (x0, y0, x1, y1) = region;
    let (rw, rh) = (x1 - x0, y1 - y0);
    let (mut count, mut sum_x, mut sum_y) = (0u64, 0u64, 0u64);
    for y in 0..rh {
        let row = &det.mask[(y0 + y) * iw + x0..(y0 + y) * iw + x1];
        for (x, cell) in row.iter().enumerate() {
            if *cell != 0 {
                count += 1;
                sum_x += x as u64;
                sum_y += y as u64;
            }
        }
    }
    let total = (rw * rh) as f64;
    let area = count as f64 / total;
    if count == 0 || area < f64::from(config.min_area) {
        return None;
    }
    let norm = |v: f32, origin: usize, size: usize| {
        ((f64::from(v) - origin as f64) / size as f64).clamp(0.0, 1.0) as f32
    };
    let mut inst = instance(card, u32::try_from(det.label).ok()?, det.score);
    inst.bbox = Some(BBox {
        x0: norm(det.bbox[0], x0, rw),
        y0: norm(det.bbox[1], y0, rh),
        x1: norm(det.bbox[2], x0, rw),
        y1: norm(det.bbox[3], y0, rh),
    });
    inst.area = area as f32;
    let n = count as f64;
    inst.centroid = Some(Point {
        x: ((sum_x as f64 / n + 0.5) / rw as f64) as f32,
        y: ((sum_y as f64 / n + 0.5) / rh as f64) as f32,
    });
    inst.mask = Some(sample_mask(
        region,
        iw,
        config.mask_width,
        config.mask_height,
        |i| det.mask[i] != 0,
    ));
    Some(inst)
}

/// Keeps the `max_instances` largest instances.
pub fn keep_largest(mut instances: Vec<Instance>, max_instances: usize) -> Vec<Instance> {
    instances.sort_by(|a, b| b.area.total_cmp(&a.area));
    instances.truncate(max_instances);
    instances
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{ClassInfo, OutputKind, ResizeMode};

    fn card() -> ModelCard {
        let class = |id, name: &str, category| ClassInfo {
            id,
            name: name.into(),
            category,
        };
        ModelCard {
            name: "t".into(),
            version: "1".into(),
            description: String::new(),
            output: OutputKind::Semantic,
            input_width: 8,
            input_height: 4,
            resize: ResizeMode::Stretch,
            mean: [0.0; 3],
            std: [1.0; 3],
            classes: vec![
                class(0, "background", ClassCategory::Background),
                class(1, "grasper", ClassCategory::Tool),
                class(2, "liver", ClassCategory::Organ),
            ],
        }
    }

    fn config() -> PostprocessConfig {
        PostprocessConfig {
            mask_width: 8,
            mask_height: 4,
            min_area: 0.0,
            ..PostprocessConfig::default()
        }
    }

    #[test]
    fn blobs_become_instances_with_normalised_geometry() {
        #[rustfmt::skip]
        let classes = [
            1, 1, 0, 0, 0, 0, 2, 2,
            1, 1, 0, 1, 0, 0, 2, 2,
            0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let scores = [0.5f32; 32];
        let map = ClassMap {
            classes: &classes,
            scores: &scores,
            width: 8,
            height: 4,
            region: (0, 0, 8, 4),
        };
        let instances = semantic_instances(&map, &card(), &config());
        // The lone grasper pixel at (3, 1) is its own blob (not 8-connected to the block).
        assert_eq!(instances.len(), 3, "{instances:?}");
        let grasper = &instances[0];
        assert_eq!((grasper.class_id, grasper.label.as_str()), (1, "grasper"));
        assert_eq!(grasper.category, orstream_proto::Category::Tool as i32);
        assert_eq!(grasper.area, 4.0 / 32.0);
        let bbox = grasper.bbox.unwrap();
        assert_eq!((bbox.x0, bbox.y0, bbox.x1, bbox.y1), (0.0, 0.0, 0.25, 0.5));
        let centroid = grasper.centroid.unwrap();
        assert_eq!((centroid.x, centroid.y), (0.125, 0.25));
        assert!((grasper.score - 0.5).abs() < 1e-6);
        let cells = rle::decode(grasper.mask.as_ref().unwrap()).unwrap();
        assert_eq!(&cells[..8], &[1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(instances[1].label, "liver");
    }

    #[test]
    fn diagonal_neighbours_join_and_small_blobs_are_dropped() {
        #[rustfmt::skip]
        let classes = [
            1, 0, 0, 0, 0, 0, 0, 2,
            0, 1, 0, 0, 0, 0, 0, 0,
            0, 0, 1, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let scores = [1.0f32; 32];
        let map = ClassMap {
            classes: &classes,
            scores: &scores,
            width: 8,
            height: 4,
            region: (0, 0, 8, 4),
        };
        let config = PostprocessConfig {
            min_area: 2.0 / 32.0,
            ..config()
        };
        let instances = semantic_instances(&map, &card(), &config);
        assert_eq!(instances.len(), 1, "{instances:?}");
        assert_eq!(instances[0].area, 3.0 / 32.0);
    }

    #[test]
    fn a_u_shape_merges_into_one_blob() {
        #[rustfmt::skip]
        let classes = [
            1, 0, 0, 1,
            1, 0, 0, 1,
            1, 1, 1, 1,
        ];
        let scores = [1.0f32; 12];
        let map = ClassMap {
            classes: &classes,
            scores: &scores,
            width: 4,
            height: 3,
            region: (0, 0, 4, 3),
        };
        let instances = semantic_instances(&map, &card(), &config());
        assert_eq!(instances.len(), 1, "{instances:?}");
    }

    #[test]
    fn detections_map_back_through_the_letterbox() {
        let mut card = card();
        card.resize = ResizeMode::Letterbox;
        // A 2:1 image in an 8x8 input: content rows 2..6.
        card.input_height = 8;
        let placement = crate::preprocess::Placement::new(&card, 16, 8);
        assert_eq!((placement.y, placement.height), (2, 4));
        let mut mask = vec![0u8; 64];
        for y in 2..4 {
            for x in 0..4 {
                mask[y * 8 + x] = 1;
            }
        }
        let det = Detection {
            bbox: [0.0, 2.0, 4.0, 4.0],
            label: 1,
            score: 0.9,
            mask: &mask,
        };
        let inst = detection_instance(&det, &placement, &card, &config()).unwrap();
        let bbox = inst.bbox.unwrap();
        assert_eq!((bbox.x0, bbox.y0, bbox.x1, bbox.y1), (0.0, 0.0, 0.5, 0.5));
        assert_eq!(inst.area, 0.25);
        let low = Detection {
            score: 0.1,
            ..det.clone()
        };
        assert!(detection_instance(&low, &placement, &card, &config()).is_none());
        let background = Detection { label: 0, ..det };
        assert!(detection_instance(&background, &placement, &card, &config()).is_none());
    }
}
