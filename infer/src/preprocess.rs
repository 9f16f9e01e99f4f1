//! From JPEG bytes to the model's input: decode (dimensions checked from the header before
//! anything is allocated), resize or letterbox to the card's input size with an antialiased
//! bilinear filter (the one torchvision and PIL use, so the engine sees what training saw),
//! and normalise with the card's mean/std.
//!
//! Two pixel formats: normalised `f32` (CPU models: the decode pool does all the work, the
//! replica only stacks), or raw `u8` RGB (CUDA models: a quarter of the bytes cross the bus
//! to the device, where the replica normalises).

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::card::{ModelCard, ResizeMode};

/// A decoded RGB image, 3 bytes per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Decodes a JPEG to RGB. The header is read first and an image over `max_pixels` (or with a
/// zero side) is refused before the pixel buffer is allocated.
pub fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, String> {
    // The decoder's own side limits are lifted to the format's maximum so that the pixel
    // budget below, with its clearer message, is what refuses absurd headers.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| format!("JPEG header: {e:?}"))?;
    let info = decoder
        .info()
        .ok_or_else(|| "JPEG header: no image information".to_owned())?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 || pixels > max_pixels {
        return Err(format!(
            "JPEG header claims {width}x{height} = {pixels} pixels; the limit is {max_pixels} \
             (decode.max_pixels)"
        ));
    }
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| "JPEG header: output size overflows".to_owned())?;
    let expected = usize::try_from(pixels * 3).map_err(|e| e.to_string())?;
    if size != expected {
        return Err(format!(
            "JPEG decodes to {size} bytes, expected {expected} for RGB {width}x{height}"
        ));
    }
    let mut data = vec![0u8; size];
    decoder
        .decode_into(&mut data)
        .map_err(|e| format!("JPEG data: {e:?}"))?;
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Where an image lies inside the model input, to map model output back to the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Model input width.
    pub input_width: u32,
    /// Model input height.
    pub input_height: u32,
    /// Left edge of the image content in the input, in input pixels.
    pub x: u32,
    /// Top edge of the image content in the input.
    pub y: u32,
    /// Width of the image content in the input.
    pub width: u32,
    /// Height of the image content in the input.
    pub height: u32,
}

impl Placement {
    /// Where an image of `width` x `height` goes in the card's input.
    pub fn new(card: &ModelCard, width: u32, height: u32) -> Self {
        let (iw, ih) = (card.input_width, card.input_height);
        match card.resize {
            ResizeMode::Stretch => Self {
                input_width: iw,
                input_height: ih,
                x: 0,
                y: 0,
                width: iw,
                height: ih,
            },
            ResizeMode::Letterbox => {
                let scale = (f64::from(iw) / f64::from(width.max(1)))
                    .min(f64::from(ih) / f64::from(height.max(1)));
                let cw = ((f64::from(width) * scale).round() as u32).clamp(1, iw);
                let ch = ((f64::from(height) * scale).round() as u32).clamp(1, ih);
                Self {
                    input_width: iw,
                    input_height: ih,
                    x: (iw - cw) / 2,
                    y: (ih - ch) / 2,
                    width: cw,
                    height: ch,
                }
            }
        }
    }

    /// The content rectangle scaled to a map of `map_w` x `map_h` covering the whole input
    /// (model outputs may be smaller than the input): `(x0, y0, x1, y1)`, end exclusive, never
    /// empty.
    pub fn in_map(&self, map_w: usize, map_h: usize) -> (usize, usize, usize, usize) {
        let sx = map_w as f64 / f64::from(self.input_width);
        let sy = map_h as f64 / f64::from(self.input_height);
        let x0 = ((f64::from(self.x) * sx).round() as usize).min(map_w.saturating_sub(1));
        let y0 = ((f64::from(self.y) * sy).round() as usize).min(map_h.saturating_sub(1));
        let x1 = ((f64::from(self.x + self.width) * sx).round() as usize).clamp(x0 + 1, map_w);
        let y1 = ((f64::from(self.y + self.height) * sy).round() as usize).clamp(y0 + 1, map_h);
        (x0, y0, x1, y1)
    }
}

/// What the decode pool hands to a replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// `[3, H, W]` normalised with the card's mean/std, ready to stack.
    Normalized(Vec<f32>),
    /// `[3, H, W]` raw RGB; the replica normalises on its device. Padding holds the mean
    /// colour, so it normalises to zero like the f32 path's.
    Rgb8(Vec<u8>),
}

/// Which [`Pixels`] the decode pool makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// [`Pixels::Normalized`].
    Normalized,
    /// [`Pixels::Rgb8`].
    Rgb8,
}

/// Precomputed filter taps for one axis: for each output index, the first input index and
/// the weights (summing to 1).
struct Taps {
    starts: Vec<usize>,
    lens: Vec<usize>,
    weights: Vec<f32>,
    /// Largest tap count, the stride of `weights`.
    stride: usize,
}

impl Taps {
    /// PIL's / torch's antialiased bilinear (triangle) filter, pixel centres at +0.5.
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f64 / output as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        let stride = (support * 2.0).ceil() as usize + 2;
        let mut starts = Vec::with_capacity(output);
        let mut lens = Vec::with_capacity(output);
        let mut weights = vec![0f32; output * stride];
        for i in 0..output {
            let center = (i as f64 + 0.5) * scale;
            let start = (center - support + 0.5).floor().max(0.0) as usize;
            let end = ((center + support + 0.5).floor() as usize).min(input);
            let len = end.saturating_sub(start).min(stride);
            let mut total = 0.0;
            let row = &mut weights[i * stride..i * stride + stride];
            for (k, w) in row.iter_mut().enumerate().take(len) {
                let x = ((start + k) as f64 - center + 0.5) / filter_scale;
                let v = (1.0 - x.abs()).max(0.0);
                *w = v as f32;
                total += v;
            }
            if total > 0.0 {
                for w in row.iter_mut().take(len) {
                    *w = (f64::from(*w) / total) as f32;
                }
            } else if len > 0 {
                row[0] = 1.0;
            }
            starts.push(start.min(input.saturating_sub(1)));
            lens.push(len.max(1));
        }
        Self {
            starts,
            lens,
            weights,
            stride,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let len = self.lens[i];
        (
            self.starts[i],
            &self.weights[i * self.stride..i * self.stride + len],
        )
    }
}

/// Resizes `image` to `width` x `height` (antialiased bilinear) and returns planar `[3, h, w]`
/// values in 0..255.
///
/// The vertical pass runs first, over whole interleaved rows (contiguous, so it vectorises),
/// which leaves the horizontal pass, with its gathers, only the output's rows to do.
fn resize_planar(image: &RgbImage, width: usize, height: usize) -> Vec<f32> {
    let (iw, ih) = (image.width as usize, image.height as usize);
    let horizontal = Taps::new(iw, width);
    let vertical = Taps::new(ih, height);
    let row_len = iw * 3;
    let src = |y: usize| &image.data[y * row_len..(y + 1) * row_len];
    let plane = width * height;
    let mut out = vec![0f32; plane * 3];
    let mut column = vec![0f32; row_len];
    for y in 0..height {
        // Vertical: one output row at full input width.
        let (start, weights) = vertical.taps(y);
        column.fill(0.0);
        for (k, w) in weights.iter().enumerate() {
            for (acc, v) in column.iter_mut().zip(src(start + k)) {
                *acc += f32::from(*v) * w;
            }
        }
        // Horizontal: into the three planes.
        for x in 0..width {
            let (start, weights) = horizontal.taps(x);
            let taps = &column[start * 3..(start + weights.len()) * 3];
            let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
            for (px, w) in taps.chunks_exact(3).zip(weights) {
                r += px[0] * w;
                g += px[1] * w;
                b += px[2] * w;
            }
            let o = y * width + x;
            out[o] = r;
            out[plane + o] = g;
            out[2 * plane + o] = b;
        }
    }
    out
}

/// Brings a decoded image to the card's input: resized or letterboxed, then normalised
/// ([`PixelFormat::Normalized`]) or rounded to bytes ([`PixelFormat::Rgb8`]).
pub fn prepare(image: &RgbImage, card: &ModelCard, format: PixelFormat) -> (Pixels, Placement) {
    let placement = Placement::new(card, image.width, image.height);
    let (iw, ih) = (card.input_width as usize, card.input_height as usize);
    let (cw, ch) = (placement.width as usize, placement.height as usize);
    let content = resize_planar(image, cw, ch);
    let plane = iw * ih;
    let content_plane = cw * ch;
    let (px, py) = (placement.x as usize, placement.y as usize);
    let pixels = match format {
        PixelFormat::Normalized => {
            let mut out = vec![0f32; plane * 3];
            for c in 0..3 {
                let (mean, std) = (card.mean[c], card.std[c]);
                for y in 0..ch {
                    let src =
                        &content[c * content_plane + y * cw..c * content_plane + (y + 1) * cw];
                    let dst = &mut out[c * plane + (py + y) * iw + px..][..cw];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = (s / 255.0 - mean) / std;
                    }
                }
            }
            Pixels::Normalized(out)
        }
        PixelFormat::Rgb8 => {
            let mut out = vec![0u8; plane * 3];
            for c in 0..3 {
                let pad = (card.mean[c] * 255.0).round().clamp(0.0, 255.0) as u8;
                out[c * plane..(c + 1) * plane].fill(pad);
                for y in 0..ch {
                    let src =
                        &content[c * content_plane + y * cw..c * content_plane + (y + 1) * cw];
                    let dst = &mut out[c * plane + (py + y) * iw + px..][..cw];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s.round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
            Pixels::Rgb8(out)
        }
    };
    (pixels, placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{ClassCategory, ClassInfo, OutputKind};

    fn card(resize: ResizeMode, w: u32, h: u32) -> ModelCard {
        ModelCard {
            name: "t".into(),
            version: "1".into(),
            description: String::new(),
            output: OutputKind::Semantic,
            input_width: w,
            input_height: h,
            resize,
            mean: [0.5, 0.5, 0.5],
            std: [0.25, 0.25, 0.25],
            classes: vec![ClassInfo {
                id: 0,
                name: "background".into(),
                category: ClassCategory::Background,
            }],
        }
    }

    fn uniform(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            data: rgb.repeat((w * h) as usize),
        }
    }

    fn jpeg(image: &RgbImage) -> Vec<u8> {
        crate::synthetic::encode_jpeg(image, 90).unwrap()
    }

    #[test]
    fn a_jpeg_decodes_to_its_size_and_colour() {
        let image = uniform(48, 32, [200, 30, 40]);
        let decoded = decode_jpeg(&jpeg(&image), 1 << 20).unwrap();
        assert_eq!((decoded.width, decoded.height), (48, 32));
        let px = &decoded.data[..3];
        assert!((i32::from(px[0]) - 200).abs() < 6, "{px:?}");
        assert!((i32::from(px[1]) - 30).abs() < 6, "{px:?}");
    }

    #[test]
    fn an_absurd_header_is_refused_before_allocating() {
        let mut bytes = jpeg(&uniform(16, 16, [1, 2, 3]));
        // Rewrite the SOF0 frame size to 65535x65535.
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline SOF");
        bytes[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let err = decode_jpeg(&bytes, 7680 * 4320).unwrap_err();
        assert!(err.contains("65535x65535"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xFF\xD8\xFF", b"not a jpeg at all"] {
            assert!(decode_jpeg(bytes, 1 << 20).is_err());
        }
        let mut truncated = jpeg(&uniform(64, 64, [9, 9, 9]));
        truncated.truncate(truncated.len() / 2);
        // A truncated scan may decode partially or fail; it must not panic.
        let _ = decode_jpeg(&truncated, 1 << 20);
    }

    #[test]
    fn resize_keeps_a_uniform_colour_and_normalises() {
        let image = uniform(640, 360, [255, 0, 128]);
        let card = card(ResizeMode::Stretch, 320, 192);
        let (Pixels::Normalized(px), placement) = prepare(&image, &card, PixelFormat::Normalized)
        else {
            panic!("f32 asked for");
        };
        assert_eq!(px.len(), 3 * 320 * 192);
        assert_eq!((placement.width, placement.height), (320, 192));
        let plane = 320 * 192;
        assert!((px[0] - 2.0).abs() < 1e-4, "{}", px[0]);
        assert!((px[plane + 77] + 2.0).abs() < 1e-4);
        assert!((px[2 * plane + 5000] - (128.0 / 255.0 - 0.5) / 0.25).abs() < 1e-4);
    }

    #[test]
    fn letterbox_centres_the_image_and_pads_with_the_mean() {
        let image = uniform(200, 100, [255, 255, 255]);
        let card = card(ResizeMode::Letterbox, 64, 64);
        let (Pixels::Normalized(px), placement) = prepare(&image, &card, PixelFormat::Normalized)
        else {
            panic!("f32 asked for");
        };
        assert_eq!(
            (placement.x, placement.y, placement.width, placement.height),
            (0, 16, 64, 32)
        );
        assert_eq!(px[0], 0.0, "padding normalises to zero");
        assert!((px[20 * 64 + 10] - 2.0).abs() < 1e-4);
        let (Pixels::Rgb8(bytes), _) = prepare(&image, &card, PixelFormat::Rgb8) else {
            panic!("u8 asked for");
        };
        assert_eq!(bytes[0], 128);
        assert_eq!(bytes[20 * 64 + 10], 255);
        assert_eq!(placement.in_map(32, 32), (0, 8, 32, 24));
    }

    #[test]
    fn downscaling_averages_like_an_antialiased_filter() {
        // Alternating black and white columns average to mid grey when halved.
        let mut image = uniform(64, 8, [0, 0, 0]);
        for y in 0..8 {
            for x in (0..64).step_by(2) {
                let p = (y * 64 + x) * 3;
                image.data[p..p + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let out = resize_planar(&image, 32, 4);
        for v in &out[32 + 2..32 + 30] {
            assert!((v - 127.5).abs() < 20.0, "{v}");
        }
    }
}
