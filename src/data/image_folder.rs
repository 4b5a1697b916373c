//! Labelled images from a user's own folder tree, as Keras'
//! `image_dataset_from_directory` and torchvision's `ImageFolder` read them:
//! `<class>/<image>` or `train/<class>/<image>` with optional `val/` (or
//! `validation/`) and `test/` beside it, as a folder or a `.tar.gz` of one.
//! JPEG and PNG of any size and colour mode are decoded in parallel, brought
//! to one size with a real resampling filter ([`Fit`]), and cached decoded,
//! so the second run starts at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

use super::ImageDataset;
use crate::{Error, Result};

/// How an image of another aspect ratio is brought to the target size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Scale so the image covers the target, then cut the centre out. An
    /// image smaller than the target is refused (it would be upscaled).
    Crop,
    /// Scale so the whole image fits, then pad the borders with black.
    Pad,
    /// Scale each axis on its own (the aspect ratio changes).
    Stretch,
}

impl Fit {
    /// The names the CLI and checkpoints use.
    pub const NAMES: [&'static str; 3] = ["crop", "pad", "stretch"];

    /// `crop`, `pad` or `stretch`.
    pub fn parse(name: &str) -> Result<Fit> {
        match name {
            "crop" => Ok(Fit::Crop),
            "pad" => Ok(Fit::Pad),
            "stretch" => Ok(Fit::Stretch),
            _ => Err(Error::param(
                "fit",
                format!("unknown fit {name:?}; use crop, pad or stretch"),
            )),
        }
    }

    /// The name [`Fit::parse`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Fit::Crop => "crop",
            Fit::Pad => "pad",
            Fit::Stretch => "stretch",
        }
    }
}

/// What happens to a file that does not decode (or is too small to crop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadImages {
    /// Leave it out and say so on stderr (the default: one broken photo
    /// should not stop a run over thousands).
    Skip,
    /// Stop with an error naming the file.
    Fail,
}

/// How to read an image folder.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Target `(height, width)` in pixels.
    pub size: (usize, usize),
    /// How other aspect ratios are handled.
    pub fit: Fit,
    /// Skip or refuse files that do not decode.
    pub bad_images: BadImages,
}

/// Which part of a tree an image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    /// `train/<class>/...`, or `<class>/...` in a tree without splits.
    Train,
    /// `val/<class>/...` or `validation/<class>/...`.
    Val,
    /// `test/<class>/...`.
    Test,
}

impl Split {
    fn of_folder(name: &str) -> Option<Split> {
        match name.to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "val" | "valid" | "validation" => Some(Split::Val),
            "test" | "testing" => Some(Split::Test),
            _ => None,
        }
    }

    /// `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A decoded image-folder tree: class names (sorted, as the label numbers
/// them) and each split that the tree has.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolder {
    /// Class names from the folder names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// The splits found, in the order train, val, test.
    pub splits: Vec<(Split, ImageDataset)>,
    /// One line per file that was skipped, naming it and why.
    pub skipped: Vec<String>,
}

impl ImageFolder {
    /// The images of `split`, if the tree has it.
    pub fn split(&self, split: Split) -> Option<&ImageDataset> {
        self.splits
            .iter()
            .find(|(s, _)| *s == split)
            .map(|(_, d)| d)
    }

    /// Remove and return the images of `split`.
    pub fn take(&mut self, split: Split) -> Option<ImageDataset> {
        let at = self.splits.iter().position(|(s, _)| *s == split)?;
        Some(self.splits.remove(at).1)
    }
}

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

const LAYOUT: &str = "expected <class>/<image> folders, or train/<class>/<image> with optional val/ and test/ beside it, as a folder or a .tar.gz";

/// Parse `HxW` (or one number for a square) as `(height, width)`.
pub fn parse_size(text: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::param(
            "size",
            format!("{text:?} is not a size; write HxW (e.g. 64x64) or one number for a square"),
        )
    };
    let (h, w) = match text.split_once(['x', 'X']) {
        Some((h, w)) => (h.trim().parse(), w.trim().parse()),
        None => (text.trim().parse(), text.trim().parse()),
    };
    let (h, w): (usize, usize) = (h.map_err(|_| bad())?, w.map_err(|_| bad())?);
    if h == 0 || w == 0 || h > 4096 || w > 4096 {
        return Err(Error::param(
            "size",
            format!("{h}x{w}: each side must be 1 to 4096 pixels"),
        ));
    }
    Ok((h, w))
}

/// Bring a decoded image to `size` (height, width) RGB by `fit`, as
/// channel-major u8 (`[3, h, w]`). `name` is used in the error.
pub fn prepare(img: &DynamicImage, size: (usize, usize), fit: Fit, name: &str) -> Result<Vec<u8>> {
    let (th, tw) = (size.0 as u32, size.1 as u32);
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::Io {
            path: name.into(),
            msg: "has no pixels".into(),
        });
    }
    // CatmullRom: sharper than bilinear, about half Lanczos3's cost.
    let filter = FilterType::CatmullRom;
    let rgb: RgbImage = if (w, h) == (tw, th) {
        img.to_rgb8()
    } else {
        match fit {
            Fit::Stretch => image::imageops::resize(&img.to_rgb8(), tw, th, filter),
            Fit::Crop => {
                if w < tw || h < th {
                    return Err(Error::Io {
                        path: name.into(),
                        msg: format!(
                            "is {w}x{h} (WxH), smaller than --size {th}x{tw} (HxW); cropping would upscale it. Use --fit pad or stretch, or a smaller --size"
                        ),
                    });
                }
                let scale = (tw as f64 / w as f64).max(th as f64 / h as f64);
                let sw = ((w as f64 * scale).round() as u32).max(tw);
                let sh = ((h as f64 * scale).round() as u32).max(th);
                let scaled = image::imageops::resize(&img.to_rgb8(), sw, sh, filter);
                image::imageops::crop_imm(&scaled, (sw - tw) / 2, (sh - th) / 2, tw, th).to_image()
            }
            Fit::Pad => {
                let scale = (tw as f64 / w as f64).min(th as f64 / h as f64);
                let sw = ((w as f64 * scale).round() as u32).clamp(1, tw);
                let sh = ((h as f64 * scale).round() as u32).clamp(1, th);
                let scaled = image::imageops::resize(&img.to_rgb8(), sw, sh, filter);
                let mut canvas = RgbImage::new(tw, th);
                image::imageops::replace(
                    &mut canvas,
                    &scaled,
                    ((tw - sw) / 2) as i64,
                    ((th - sh) / 2) as i64,
                );
                canvas
            }
        }
    };
    let plane = (th * tw) as usize;
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = px[c];
        }
    }
    Ok(chw)
}

/// Decode an encoded image (any format the build reads) and [`prepare`] it.
pub fn decode(bytes: &[u8], size: (usize, usize), fit: Fit, name: &str) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Io {
        path: name.into(),
        msg: format!("is not a decodable image: {e}"),
    })?;
    prepare(&img, size, fit, name)
}

/// Read and [`decode`] one image file.
pub fn load_file(path: &Path, size: (usize, usize), fit: Fit) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    decode(&bytes, size, fit, &path.display().to_string())
}

/// Whether a file name looks like an image this build decodes.
pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// One image file of the tree: where it sits, and its bytes once read.
struct Entry {
    split: Split,
    class: String,
    /// The file, or `name in archive`, for messages.
    name: String,
    source: Source,
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// The split and class of `components` (the path below the root, file
/// last): `.../<split>/<class>/<file>` or `.../<class>/<file>`.
fn place(components: &[&str]) -> Option<(Option<Split>, String)> {
    let n = components.len();
    if n < 2 {
        return None;
    }
    let class = components[n - 2].to_string();
    let split = (n >= 3)
        .then(|| Split::of_folder(components[n - 3]))
        .flatten();
    Some((split, class))
}

/// The tree at `path` (a folder or `.tar.gz`), decoded, through a cache in
/// `$SHADERGRAD_CACHE` or `~/.cache/shadergrad`.
pub fn load(path: &Path, opts: &FolderOptions) -> Result<ImageFolder> {
    load_cached(path, opts, super::cache::default_dir().as_deref())
}

/// [`load`] with the decoded cache kept in `cache_dir` (none: no cache).
pub fn load_cached(
    path: &Path,
    opts: &FolderOptions,
    cache_dir: Option<&Path>,
) -> Result<ImageFolder> {
    let cache = cache_dir.and_then(|d| cache_path(d, path, opts));
    if let Some(c) = &cache {
        if let Ok(data) = read_cache(c) {
            return Ok(data);
        }
    }
    let data = load_uncached(path, opts)?;
    if let Some(c) = &cache {
        // A cache we cannot write only costs time next run.
        let _ = write_cache(c, &data);
    }
    Ok(data)
}

/// Read and decode the tree at `path` without a cache.
pub fn load_uncached(path: &Path, opts: &FolderOptions) -> Result<ImageFolder> {
    if opts.size.0 == 0 || opts.size.1 == 0 {
        return Err(Error::param("size", "each side must be at least 1 pixel"));
    }
    let (entries, empty_classes) = if path.is_dir() {
        scan_dir(path)?
    } else if path.is_file() {
        scan_archive(path)?
    } else {
        return Err(io_err(
            path,
            format!("does not exist; give an image folder or a .tar.gz of one ({LAYOUT})"),
        ));
    };
    if let Some(dir) = empty_classes.first() {
        return Err(io_err(
            dir,
            "is a class folder with no .jpg, .jpeg or .png images; add images or remove the folder",
        ));
    }
    build(path, entries, opts)
}

/// Every image file under `root` (and the class folders that hold none).
fn scan_dir(root: &Path) -> Result<(Vec<Entry>, Vec<PathBuf>)> {
    let mut entries = Vec::new();
    let mut empty = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, parts)) = stack.pop() {
        let mut children: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        let mut images = 0;
        let mut subdirs = 0;
        for child in children {
            let name = child
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with('.') {
                continue;
            }
            if child.is_dir() {
                subdirs += 1;
                let mut p = parts.clone();
                p.push(name);
                stack.push((child, p));
            } else if is_image_name(&name) {
                let mut p: Vec<&str> = parts.iter().map(String::as_str).collect();
                p.push(&name);
                if let Some((split, class)) = place(&p) {
                    images += 1;
                    entries.push((
                        split,
                        Entry {
                            split: Split::Train,
                            class,
                            name: child.display().to_string(),
                            source: Source::File(child),
                        },
                    ));
                }
            }
        }
        // A leaf folder below the root that is not a split: a class folder.
        let is_split = parts.last().and_then(|p| Split::of_folder(p)).is_some();
        if images == 0 && subdirs == 0 && !parts.is_empty() && !is_split {
            empty.push(dir);
        }
    }
    // Sorted by name, so labels and the order of examples never depend on
    // the walk.
    entries.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    empty.sort();
    Ok((assign_splits(entries), empty))
}

/// When any image sits under a split folder, the tree has splits and
/// images outside them are ignored; otherwise everything is training data.
fn assign_splits(found: Vec<(Option<Split>, Entry)>) -> Vec<Entry> {
    let has_splits = found.iter().any(|(s, _)| s.is_some());
    found
        .into_iter()
        .filter_map(|(split, mut e)| match (has_splits, split) {
            (true, Some(s)) => {
                e.split = s;
                Some(e)
            }
            (true, None) => None,
            (false, _) => Some(e),
        })
        .collect()
}

/// Every image file in the archive at `path` (and the class folders that
/// hold none, as `folder in archive`).
fn scan_archive(path: &Path) -> Result<(Vec<Entry>, Vec<PathBuf>)> {
    let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let corrupt = |e: std::io::Error, at: &str| {
        io_err(
            path,
            format!("is not a readable .tar.gz, or is truncated or corrupt ({e}){at}"),
        )
    };
    let mut found = Vec::new();
    // Folder entries, and every folder something (a file or folder) sits in:
    // a folder that nothing sits in is empty.
    let (mut folders, mut parents) = (BTreeSet::new(), BTreeSet::new());
    for entry in archive.entries().map_err(|e| corrupt(e, ""))? {
        let mut entry = entry.map_err(|e| corrupt(e, ""))?;
        let name = entry
            .path()
            .map_err(|e| corrupt(e, ""))?
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = name
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.iter().any(|p| p.starts_with('.')) {
            continue;
        }
        for depth in 1..parts.len() {
            parents.insert(parts[..depth].join("/"));
        }
        if entry.header().entry_type().is_dir() {
            folders.insert(parts.join("/"));
            continue;
        }
        if !entry.header().entry_type().is_file() || !is_image_name(&name) {
            continue;
        }
        let Some((split, class)) = place(&parts) else {
            continue;
        };
        // The size field is the archive's claim; cap what we reserve on it.
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(64 << 20));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(e, &format!(" while reading {name}")))?;
        found.push((
            split,
            Entry {
                split: Split::Train,
                class,
                name: format!("{name} in {}", path.display()),
                source: Source::Bytes(bytes),
            },
        ));
    }
    let empty = folders
        .iter()
        .filter(|f| !parents.contains(*f))
        .filter(|f| f.rsplit('/').next().and_then(Split::of_folder).is_none())
        .map(|f| PathBuf::from(format!("{f}/ in {}", path.display())))
        .collect();
    Ok((assign_splits(found), empty))
}

fn build(root: &Path, entries: Vec<Entry>, opts: &FolderOptions) -> Result<ImageFolder> {
    if entries.is_empty() {
        return Err(io_err(
            root,
            format!("holds no .jpg, .jpeg or .png images; {LAYOUT}"),
        ));
    }
    let classes: Vec<String> = entries
        .iter()
        .filter(|e| e.split == Split::Train)
        .map(|e| e.class.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if classes.is_empty() {
        return Err(io_err(
            root,
            "has val/ or test/ images but no train/ folder to learn the classes from",
        ));
    }
    if classes.len() > 256 {
        return Err(io_err(
            root,
            format!(
                "has {} class folders; at most 256 are supported",
                classes.len()
            ),
        ));
    }
    for e in &entries {
        if classes.binary_search(&e.class).is_err() {
            return Err(Error::Io {
                path: e.name.clone(),
                msg: format!(
                    "is in class folder {:?} of the {} split, which train/ does not have (train/ has {})",
                    e.class,
                    e.split.name(),
                    classes.join(", ")
                ),
            });
        }
    }
    let decoded: Vec<(usize, std::result::Result<Vec<u8>, Error>)> = entries
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            let pixels = match &e.source {
                Source::File(p) => fs::read(p)
                    .map_err(|err| io_err(p, err))
                    .and_then(|b| decode(&b, opts.size, opts.fit, &e.name)),
                Source::Bytes(b) => decode(b, opts.size, opts.fit, &e.name),
            };
            (i, pixels)
        })
        .collect();
    let (h, w) = opts.size;
    let mut sets: BTreeMap<Split, ImageDataset> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut per_class: BTreeMap<(Split, &str), usize> = BTreeMap::new();
    for (i, pixels) in decoded {
        let e = &entries[i];
        let pixels = match pixels {
            Ok(p) => p,
            Err(err) if opts.bad_images == BadImages::Skip => {
                skipped.push(err.to_string());
                continue;
            }
            Err(Error::Io { path, msg }) => {
                return Err(Error::Io {
                    path,
                    msg: format!("{msg} (--bad-images skip leaves such files out)"),
                })
            }
            Err(err) => return Err(err),
        };
        let set = sets.entry(e.split).or_insert_with(|| ImageDataset {
            images: vec![],
            labels: vec![],
            channels: 3,
            height: h,
            width: w,
        });
        let label = classes.binary_search(&e.class).unwrap_or_default();
        set.labels.push(label as u8);
        set.images.extend_from_slice(&pixels);
        *per_class.entry((e.split, e.class.as_str())).or_default() += 1;
    }
    for class in &classes {
        if !per_class.contains_key(&(Split::Train, class.as_str())) {
            return Err(io_err(
                root,
                format!("class {class:?} has no decodable training images"),
            ));
        }
    }
    Ok(ImageFolder {
        classes,
        splits: sets.into_iter().collect(),
        skipped,
    })
}

/// Move a seeded, per-class `fraction` of `data` into a validation set
/// (every class keeps at least one training image).
pub fn split_off(
    data: &ImageDataset,
    classes: usize,
    fraction: f32,
    seed: u64,
) -> Result<(ImageDataset, ImageDataset)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::param(
            "val-fraction",
            format!("{fraction} is not in [0, 1)"),
        ));
    }
    let order = super::batches::epoch_order(data.len(), true, seed ^ 0x0076_616c, 0);
    // Labels beyond `classes` get groups of their own rather than a panic.
    let groups = data
        .labels
        .iter()
        .map(|&l| l as usize + 1)
        .max()
        .unwrap_or(0)
        .max(classes);
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; groups];
    for i in order {
        by_class[data.labels[i] as usize].push(i);
    }
    let mut is_val = vec![false; data.len()];
    for members in &by_class {
        // Every class keeps at least one training image.
        let k = ((members.len() as f32 * fraction).round() as usize)
            .min(members.len().saturating_sub(1));
        members[..k].iter().for_each(|&i| is_val[i] = true);
    }
    let pick = |want: bool| {
        let idx: Vec<usize> = (0..data.len()).filter(|&i| is_val[i] == want).collect();
        data.select(&idx)
    };
    Ok((pick(false), pick(true)))
}

// ------------------------------------------------------------------ cache

const CACHE_MAGIC: &[u8; 8] = b"SGFOLDR1";

/// The cache file for `source` read with `opts`: keyed by the path, and by
/// each file's size and modification time (a folder's own time does not
/// change when a file inside is replaced).
fn cache_path(dir: &Path, source: &Path, opts: &FolderOptions) -> Option<PathBuf> {
    let canon = fs::canonicalize(source).ok()?;
    let stamp = |p: &Path| -> Option<String> {
        let meta = fs::metadata(p).ok()?;
        let t = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!(
            "{}:{}.{}",
            meta.len(),
            t.as_secs(),
            t.subsec_nanos()
        ))
    };
    let mut key = format!(
        "{}|{}x{}|{}|{:?}",
        canon.display(),
        opts.size.0,
        opts.size.1,
        opts.fit.name(),
        opts.bad_images
    );
    if canon.is_dir() {
        let (entries, _) = scan_dir(&canon).ok()?;
        for e in entries {
            if let Source::File(p) = &e.source {
                key.push_str(&format!("|{}={}", p.display(), stamp(p)?));
            }
        }
    } else {
        key.push_str(&stamp(&canon)?);
    }
    Some(super::cache::entry(dir, "folder", &key))
}

fn write_str(f: &mut dyn Write, s: &str) -> std::io::Result<()> {
    f.write_all(&(s.len() as u64).to_le_bytes())?;
    f.write_all(s.as_bytes())
}

fn write_cache(path: &Path, data: &ImageFolder) -> std::io::Result<()> {
    super::cache::write_atomic(path, |f| {
        f.write_all(CACHE_MAGIC)?;
        write_str(f, &data.classes.join("\n"))?;
        write_str(f, &data.skipped.join("\n"))?;
        f.write_all(&(data.splits.len() as u64).to_le_bytes())?;
        for (split, d) in &data.splits {
            f.write_all(&[*split as u8])?;
            for v in [d.len(), d.channels, d.height, d.width] {
                f.write_all(&(v as u64).to_le_bytes())?;
            }
            f.write_all(&d.labels)?;
            f.write_all(&d.images)?;
        }
        Ok(())
    })
}

/// Reads the cache file's fields in order; any short read is "bad cache".
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::io::Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(bad_cache)?;
        let s = self.bytes.get(self.at..end).ok_or_else(bad_cache)?;
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> std::io::Result<usize> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad_cache())?;
        usize::try_from(u64::from_le_bytes(b)).map_err(|_| bad_cache())
    }
    fn lines(&mut self) -> std::io::Result<Vec<String>> {
        let n = self.u64()?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| bad_cache())?;
        Ok(if s.is_empty() {
            vec![]
        } else {
            s.split('\n').map(String::from).collect()
        })
    }
}

fn bad_cache() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad cache")
}

fn read_cache(path: &Path) -> std::io::Result<ImageFolder> {
    let bytes = fs::read(path)?;
    if bytes.get(..8) != Some(CACHE_MAGIC) {
        return Err(bad_cache());
    }
    let mut r = Cursor {
        bytes: &bytes,
        at: 8,
    };
    let classes = r.lines()?;
    let skipped = r.lines()?;
    let count = r.u64()?;
    let mut splits = Vec::new();
    for _ in 0..count.min(3) {
        let split = match r.take(1)?[0] {
            0 => Split::Train,
            1 => Split::Val,
            2 => Split::Test,
            _ => return Err(bad_cache()),
        };
        let n = r.u64()?;
        let (c, h, w) = (r.u64()?, r.u64()?, r.u64()?);
        let labels = r.take(n)?.to_vec();
        let len = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(bad_cache)?;
        let images = r.take(len)?.to_vec();
        if labels.iter().any(|&l| l as usize >= classes.len()) {
            return Err(bad_cache());
        }
        splits.push((
            split,
            ImageDataset {
                images,
                labels,
                channels: c,
                height: h,
                width: w,
            },
        ));
    }
    if r.at != bytes.len() {
        return Err(bad_cache());
    }
    Ok(ImageFolder {
        classes,
        splits,
        skipped,
    })
}
