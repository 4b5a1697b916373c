//! Sets of unlabelled images to score or export: a folder of PNG/JPEG
//! files, or a NumPy `.npy` array of uint8 (`[n, h, w, c]` as saved from
//! PyTorch/NumPy code, or `[n, c, h, w]`); and writing them back as PNG
//! files, sample grids and `.npy`.

use std::path::Path;

use rayon::prelude::*;

use super::ImageDataset;
use crate::{Error, Result};

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// The images at `path` (a folder of image files or a `.npy` file), each
/// `side`x`side` RGB, as channel-major u8 with label 0.
pub fn load(path: &Path, side: usize) -> Result<ImageDataset> {
    if !path.exists() {
        return Err(io_err(
            path,
            "does not exist; give a folder of PNG/JPEG images or a .npy uint8 array",
        ));
    }
    if path.is_dir() {
        load_folder(path, side)
    } else {
        load_npy(path, side)
    }
}

fn load_folder(dir: &Path, side: usize) -> Result<ImageDataset> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.to_string_lossy().to_ascii_lowercase();
            [".png", ".jpg", ".jpeg"].iter().any(|e| name.ends_with(e))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(io_err(dir, "holds no .png, .jpg or .jpeg files"));
    }
    let images = files
        .par_iter()
        .map(|f| {
            let img =
                image::open(f).map_err(|e| io_err(f, format!("is not a decodable image: {e}")))?;
            if img.width() as usize != side || img.height() as usize != side {
                return Err(io_err(
                    f,
                    format!(
                        "is {}x{}; these scores take {side}x{side} images",
                        img.width(),
                        img.height()
                    ),
                ));
            }
            let rgb = img.to_rgb8();
            let mut chw = vec![0u8; 3 * side * side];
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * side * side + i] = px[c];
                }
            }
            Ok(chw)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageDataset {
        labels: vec![0; images.len()],
        images: images.concat(),
        channels: 3,
        height: side,
        width: side,
    })
}

/// Refuse a header whose `'shape'` multiplies past 2^64 values before npyz
/// reads it (npyz overflows there).
fn check_npy_shape(bytes: &[u8]) -> std::result::Result<(), String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 16)]);
    let Some(start) = text
        .find("'shape'")
        .and_then(|i| text[i..].find('(').map(|j| i + j + 1))
    else {
        return Ok(()); // no shape to check; the reader reports what is wrong
    };
    let Some(len) = text[start..].find(')') else {
        return Ok(());
    };
    let mut count: u128 = 1;
    for dim in text[start..start + len]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let d: u128 = dim
            .trim_end_matches('L')
            .parse()
            .map_err(|_| format!("has a shape entry {dim:?} that is not a size"))?;
        count = count.saturating_mul(d);
    }
    if count > u64::MAX as u128 {
        return Err(format!(
            "has a header whose shape holds more than 2^64 values: it is corrupt ({})",
            &text[start - 1..=start + len]
        ));
    }
    Ok(())
}

fn load_npy(path: &Path, side: usize) -> Result<ImageDataset> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    check_npy_shape(&bytes).map_err(|e| io_err(path, e))?;
    // npyz panics on some corrupt headers (an element count that overflows,
    // found by fuzzing); the check above refuses those, this any others.
    let npy = std::panic::catch_unwind(|| npyz::NpyFile::new(&bytes[..]))
        .map_err(|_| io_err(path, "is not a readable .npy file (corrupt header)"))?
        .map_err(|e| io_err(path, format!("is not a readable .npy file ({e})")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    if dtype != npyz::DType::Plain("|u1".parse().map_err(|e| io_err(path, format!("{e:?}")))?) {
        return Err(io_err(
            path,
            format!(
                "holds {} values; save the images as uint8 (0-255)",
                dtype.descr()
            ),
        ));
    }
    let (nhwc, n) = match shape.as_slice() {
        [n, h, w, 3] if *h == side && *w == side => (true, *n),
        [n, 3, h, w] if *h == side && *w == side => (false, *n),
        _ => {
            return Err(io_err(
                path,
                format!("has shape {shape:?}; expected [n, {side}, {side}, 3] or [n, 3, {side}, {side}] uint8"),
            ))
        }
    };
    // The header's count is a claim: a reader must not size a buffer by
    // more values than the file could hold (one byte each, as uint8).
    let claimed = n.checked_mul(3 * side * side);
    if claimed.is_none_or(|c| c > bytes.len()) {
        return Err(io_err(
            path,
            format!(
                "has a header claiming {n} images of {side}x{side}x3 but is only {} bytes: it is truncated or corrupt",
                bytes.len()
            ),
        ));
    }
    let fortran = npy.order() == npyz::Order::Fortran;
    let data: Vec<u8> = npy
        .into_vec()
        .map_err(|e| io_err(path, format!("is truncated or corrupt ({e})")))?;
    let plane = side * side;
    if data.len() != n * 3 * plane {
        return Err(io_err(path, "holds fewer values than its header says"));
    }
    if fortran {
        return Err(io_err(
            path,
            "is in Fortran order; save it C-contiguous (np.ascontiguousarray)",
        ));
    }
    let images = if nhwc {
        let mut chw = vec![0u8; data.len()];
        chw.par_chunks_mut(3 * plane)
            .zip(data.par_chunks(3 * plane))
            .for_each(|(dst, src)| {
                for i in 0..plane {
                    for c in 0..3 {
                        dst[c * plane + i] = src[i * 3 + c];
                    }
                }
            });
        chw
    } else {
        data
    };
    Ok(ImageDataset {
        labels: vec![0; n],
        images,
        channels: 3,
        height: side,
        width: side,
    })
}

/// Float images `[n, 3, h, w]` in [-1, 1] (a generator's tanh output) as
/// u8, rounding to the nearest of 256 levels, as an image file would.
pub fn from_signed_floats(values: &[f32], n: usize, side: usize) -> Result<ImageDataset> {
    if values.len() != n * 3 * side * side {
        return Err(Error::param(
            "image set",
            format!(
                "{} values are not {n} images of 3x{side}x{side}",
                values.len()
            ),
        ));
    }
    let images = values
        .iter()
        .map(|&v| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8)
        .collect();
    Ok(ImageDataset {
        labels: vec![0; n],
        images,
        channels: 3,
        height: side,
        width: side,
    })
}

fn rgb(set: &ImageDataset, i: usize) -> image::RgbImage {
    let (h, w) = (set.height, set.width);
    let plane = h * w;
    let img = &set.images[i * set.image_len()..(i + 1) * set.image_len()];
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        image::Rgb([img[p], img[plane + p], img[2 * plane + p]])
    })
}

fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    // Written beside the target and renamed: a reader never sees half a file.
    let tmp = path.with_extension("tmp.png");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| io_err(path, format!("could not write the PNG: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Up to `rows * cols` images, row by row, as one PNG grid, `scale`
/// pixels per image pixel, with a 1-pixel gap (scaled) between images.
pub fn save_grid(
    set: &ImageDataset,
    rows: usize,
    cols: usize,
    scale: usize,
    path: &Path,
) -> Result<()> {
    if set.is_empty() || set.channels != 3 || rows * cols == 0 {
        return Err(io_err(
            path,
            format!(
                "a {rows}x{cols} grid needs RGB images, got {} of {} channels",
                set.len(),
                set.channels
            ),
        ));
    }
    let (h, w, s) = (set.height, set.width, scale.max(1));
    let (cell_h, cell_w) = ((h + 1) * s, (w + 1) * s);
    let mut grid = image::RgbImage::from_pixel(
        (cols * cell_w + s) as u32,
        (rows * cell_h + s) as u32,
        image::Rgb([24, 24, 24]),
    );
    for r in 0..rows {
        for c in (0..cols).take_while(|c| r * cols + c < set.len()) {
            let img = rgb(set, r * cols + c);
            for (x, y, px) in img.enumerate_pixels() {
                for dy in 0..s {
                    for dx in 0..s {
                        grid.put_pixel(
                            (s + c * cell_w + x as usize * s + dx) as u32,
                            (s + r * cell_h + y as usize * s + dy) as u32,
                            *px,
                        );
                    }
                }
            }
        }
    }
    save_png(&grid, path)
}

/// Each image as its own PNG in `dir` (`000000.png`, ...).
pub fn save_each(set: &ImageDataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    (0..set.len())
        .into_par_iter()
        .try_for_each(|i| save_png(&rgb(set, i), &dir.join(format!("{i:06}.png"))))
}

/// The images as a `.npy` uint8 array `[n, h, w, 3]` (NumPy's image layout).
pub fn save_npy(set: &ImageDataset, path: &Path) -> Result<()> {
    let (h, w) = (set.height, set.width);
    let plane = h * w;
    let mut hwc = vec![0u8; set.images.len()];
    for (dst, src) in hwc.chunks_mut(3 * plane).zip(set.images.chunks(3 * plane)) {
        for i in 0..plane {
            for c in 0..3 {
                dst[i * 3 + c] = src[c * plane + i];
            }
        }
    }
    let tmp = path.with_extension("tmp.npy");
    {
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        use npyz::WriterBuilder;
        let mut writer = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&[set.len() as u64, h as u64, w as u64, 3])
            .writer(std::io::BufWriter::new(file))
            .begin_nd()
            .map_err(|e| io_err(&tmp, e))?;
        writer.extend(hwc).map_err(|e| io_err(&tmp, e))?;
        writer.finish().map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}
