//! CIFAR-10 from the official binary distribution (`cifar-10-binary.tar.gz`
//! or its extracted `cifar-10-batches-bin/`) or from an image-folder tree
//! (`train/<class>/*.jpg`, `test/<class>/*.jpg`), itself possibly a `.tar.gz`.
//! Archives are read in place; the decoded result is cached so the second
//! load is fast.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::image_folder::is_image_name;
use super::ImageDataset;
use crate::{Error, Result};

/// Class names in label order (alphabetical, as image-folder loaders number them).
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

#[derive(Clone, Debug, PartialEq)]
/// CIFAR-10's two splits.
pub struct Cifar10 {
    /// 50,000 training images.
    pub train: ImageDataset,
    /// 10,000 test images.
    pub test: ImageDataset,
}

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

const WHERE_TO_GET_IT: &str = "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (or an image-folder copy such as cifar10-jpg.tar.gz) and pass its path with --data or $SHADERGRAD_DATA. Layouts read: cifar-10-binary.tar.gz, cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin), an image-folder tree train/<class>/*.jpg + test/<class>/*.jpg, or a .tar.gz of one";

/// The CIFAR-10 source inside `dir` (a directory or an archive itself), if any.
fn source_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if !path.is_dir() {
        return None;
    }
    let named = [
        "cifar-10-batches-bin",
        "cifar-10-binary.tar.gz",
        "cifar10-jpg.tar.gz",
        "cifar10",
        "cifar-10",
    ];
    for name in named {
        let p = path.join(name);
        if p.exists() && (p.is_file() || source_in(&p).is_some()) {
            return Some(p);
        }
    }
    let binary = path.join("data_batch_1.bin").is_file();
    let folders = path.join("train").is_dir() && path.join("test").is_dir();
    (binary || folders).then(|| path.to_path_buf())
}

/// Where CIFAR-10 is: `--data`, else `$SHADERGRAD_DATA`, else `./data`, else `../shared/data`.
pub fn find(flag: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os("SHADERGRAD_DATA").map(PathBuf::from);
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = match (flag, env) {
        (Some(f), _) => vec![f.to_path_buf()],
        (None, Some(e)) => vec![e],
        (None, None) => vec![PathBuf::from("data"), PathBuf::from("../shared/data")],
    };
    for c in &candidates {
        if let Some(found) = source_in(c) {
            return Ok(found);
        }
        tried.push(c.display().to_string());
    }
    Err(Error::Io {
        path: tried.join(", "),
        msg: format!("no CIFAR-10 found there; {WHERE_TO_GET_IT}"),
    })
}

/// Load train and test splits from `path` (see [`find`]), through the cache
/// in `$SHADERGRAD_CACHE` or `~/.cache/shadergrad`.
pub fn load(path: &Path) -> Result<Cifar10> {
    load_cached(path, super::cache::default_dir().as_deref())
}

/// Load through a decoded cache kept in `cache_dir` (none: no cache).
pub fn load_cached(path: &Path, cache_dir: Option<&Path>) -> Result<Cifar10> {
    let cache = cache_dir.and_then(|d| cache_path(d, path));
    if let Some(c) = &cache {
        if let Ok(data) = read_cache(c) {
            return Ok(data);
        }
    }
    let data = load_uncached(path)?;
    if let Some(c) = &cache {
        // A cache we cannot write only costs time next run.
        let _ = write_cache(c, &data);
    }
    Ok(data)
}

/// Read CIFAR-10 from `path` (any layout [`find`] accepts) without the cache.
pub fn load_uncached(path: &Path) -> Result<Cifar10> {
    if path.is_dir() {
        let bin = path.join("cifar-10-batches-bin");
        let dir = if bin.is_dir() {
            bin
        } else {
            path.to_path_buf()
        };
        if dir.join("data_batch_1.bin").is_file() {
            return load_binary_dir(&dir);
        }
        return load_folder_dir(path);
    }
    if !path.is_file() {
        return Err(io_err(path, format!("does not exist; {WHERE_TO_GET_IT}")));
    }
    load_archive(path)
}

// ------------------------------------------------------------------ binary

fn parse_records(name: &str, bytes: &[u8], into: &mut ImageDataset) -> Result<()> {
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(Error::Io {
            path: name.into(),
            msg: format!(
                "is {} bytes, not a whole number of {RECORD_BYTES}-byte records: the file is truncated or not a CIFAR-10 batch",
                bytes.len()
            ),
        });
    }
    for (i, rec) in bytes.chunks(RECORD_BYTES).enumerate() {
        if rec[0] as usize >= CLASSES.len() {
            return Err(Error::Io {
                path: name.into(),
                msg: format!("record {i}: label {} is out of range 0..9", rec[0]),
            });
        }
        into.labels.push(rec[0]);
        into.images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

fn empty() -> ImageDataset {
    ImageDataset {
        images: vec![],
        labels: vec![],
        channels: 3,
        height: SIDE,
        width: SIDE,
    }
}

fn load_binary_dir(dir: &Path) -> Result<Cifar10> {
    let mut train = empty();
    for i in 1..=5 {
        let p = dir.join(format!("data_batch_{i}.bin"));
        let bytes = fs::read(&p).map_err(|e| io_err(&p, e))?;
        parse_records(&p.display().to_string(), &bytes, &mut train)?;
    }
    let mut test = empty();
    let p = dir.join("test_batch.bin");
    let bytes = fs::read(&p).map_err(|e| io_err(&p, e))?;
    parse_records(&p.display().to_string(), &bytes, &mut test)?;
    Ok(Cifar10 { train, test })
}

// ------------------------------------------------------------------ image folders

/// One encoded image: split ("train"/"test"), class name, where it came from, bytes.
struct Encoded {
    split: String,
    class: String,
    name: String,
    bytes: Vec<u8>,
}

/// Recognise `[prefix/]{train,test}/<class>/<file>` and return (split, class).
fn split_and_class(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let n = parts.len();
    if n < 3 {
        return None;
    }
    let split = parts[n - 3];
    (split == "train" || split == "test").then(|| (split.to_string(), parts[n - 2].to_string()))
}

fn decode_all(encoded: Vec<Encoded>, source: &Path) -> Result<Cifar10> {
    let classes: BTreeSet<&str> = encoded.iter().map(|e| e.class.as_str()).collect();
    let classes: Vec<&str> = classes.into_iter().collect();
    if classes.len() != CLASSES.len() {
        return Err(io_err(
            source,
            format!(
                "found {} class folders ({:?}); CIFAR-10 has 10",
                classes.len(),
                classes
            ),
        ));
    }
    let decoded: Vec<(bool, u8, Vec<u8>)> = encoded
        .par_iter()
        .map(|e| {
            let img = image::load_from_memory(&e.bytes).map_err(|err| Error::Io {
                path: format!("{} in {}", e.name, source.display()),
                msg: format!("is not a decodable image: {err}"),
            })?;
            if img.width() as usize != SIDE || img.height() as usize != SIDE {
                return Err(Error::Io {
                    path: format!("{} in {}", e.name, source.display()),
                    msg: format!(
                        "is {}x{}, CIFAR-10 images are 32x32",
                        img.width(),
                        img.height()
                    ),
                });
            }
            let rgb = img.to_rgb8();
            let mut chw = vec![0u8; IMAGE_BYTES];
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * SIDE * SIDE + i] = px[c];
                }
            }
            let label = classes.binary_search(&e.class.as_str()).unwrap_or_default() as u8;
            Ok((e.split == "train", label, chw))
        })
        .collect::<Result<_>>()?;
    let (mut train, mut test) = (empty(), empty());
    for (is_train, label, chw) in decoded {
        let d = if is_train { &mut train } else { &mut test };
        d.labels.push(label);
        d.images.extend_from_slice(&chw);
    }
    if train.is_empty() || test.is_empty() {
        return Err(io_err(source, "needs both a train/ and a test/ split"));
    }
    Ok(Cifar10 { train, test })
}

fn load_folder_dir(root: &Path) -> Result<Cifar10> {
    let mut encoded = Vec::new();
    for split in ["train", "test"] {
        let sdir = root.join(split);
        let classes =
            fs::read_dir(&sdir).map_err(|e| io_err(&sdir, format!("{e}; {WHERE_TO_GET_IT}")))?;
        for class in classes {
            let class = class.map_err(|e| io_err(&sdir, e))?.path();
            if !class.is_dir() {
                continue;
            }
            let mut files: Vec<PathBuf> = fs::read_dir(&class)
                .map_err(|e| io_err(&class, e))?
                .filter_map(|f| f.ok().map(|f| f.path()))
                .filter(|p| is_image_name(&p.to_string_lossy()))
                .collect();
            files.sort();
            for f in files {
                encoded.push(Encoded {
                    split: split.into(),
                    class: class
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    name: f.display().to_string(),
                    bytes: fs::read(&f).map_err(|e| io_err(&f, e))?,
                });
            }
        }
    }
    decode_all(encoded, root)
}

// ------------------------------------------------------------------ archives

fn load_archive(path: &Path) -> Result<Cifar10> {
    let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let corrupt =
        |e: std::io::Error, at: &str| io_err(path, format!("is truncated or corrupt ({e}){at}"));
    let mut encoded = Vec::new();
    let (mut train_bin, mut test_bin) = (vec![None; 5], None);
    for entry in archive.entries().map_err(|e| corrupt(e, ""))? {
        let mut entry = entry.map_err(|e| corrupt(e, ""))?;
        let name = entry
            .path()
            .map_err(|e| corrupt(e, ""))?
            .to_string_lossy()
            .into_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let base = name.rsplit('/').next().unwrap_or("");
        let batch = base
            .strip_prefix("data_batch_")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| (1..=5).contains(i));
        let wanted = batch.is_some()
            || base == "test_batch.bin"
            || (is_image_name(base) && split_and_class(&name).is_some());
        if !wanted {
            continue;
        }
        // The header's size is a claim (a corrupt one said 8 GiB, found by
        // fuzzing): reserve at most a batch file's worth up front.
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(64 << 20));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(e, &format!(" while reading {name}")))?;
        if let Some(i) = batch {
            train_bin[i - 1] = Some((name, bytes));
        } else if base == "test_batch.bin" {
            test_bin = Some((name, bytes));
        } else if let Some((split, class)) = split_and_class(&name) {
            encoded.push(Encoded {
                split,
                class,
                name,
                bytes,
            });
        }
    }
    if let Some((tname, tbytes)) = test_bin {
        let mut train = empty();
        for (i, b) in train_bin.into_iter().enumerate() {
            let (name, bytes) = b.ok_or_else(|| {
                io_err(
                    path,
                    format!("has test_batch.bin but no data_batch_{}.bin", i + 1),
                )
            })?;
            parse_records(&format!("{name} in {}", path.display()), &bytes, &mut train)?;
        }
        let mut test = empty();
        parse_records(
            &format!("{tname} in {}", path.display()),
            &tbytes,
            &mut test,
        )?;
        return Ok(Cifar10 { train, test });
    }
    if encoded.is_empty() {
        return Err(io_err(
            path,
            format!("holds no CIFAR-10 batches or train/test image folders; {WHERE_TO_GET_IT}"),
        ));
    }
    decode_all(encoded, path)
}

// ------------------------------------------------------------------ cache

const CACHE_MAGIC: &[u8; 8] = b"SGCIFAR1";

/// The cache file in `dir` for `source`, keyed by its path, size and
/// modification time.
fn cache_path(dir: &Path, source: &Path) -> Option<PathBuf> {
    let canon = fs::canonicalize(source).ok()?;
    let meta = fs::metadata(&canon).ok()?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key = format!("{}|{}|{}", canon.display(), meta.len(), stamp);
    Some(super::cache::entry(dir, "cifar10", &key))
}

fn write_cache(path: &Path, data: &Cifar10) -> std::io::Result<()> {
    super::cache::write_atomic(path, |f| {
        f.write_all(CACHE_MAGIC)?;
        for d in [&data.train, &data.test] {
            f.write_all(&(d.len() as u64).to_le_bytes())?;
            f.write_all(&d.labels)?;
            f.write_all(&d.images)?;
        }
        Ok(())
    })
}

fn read_cache(path: &Path) -> std::io::Result<Cifar10> {
    let bytes = fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad cache");
    if bytes.get(..8) != Some(CACHE_MAGIC) {
        return Err(bad());
    }
    let mut at = 8;
    let mut split = || -> std::io::Result<ImageDataset> {
        let n = u64::from_le_bytes(
            bytes
                .get(at..at + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        at += 8;
        let labels = bytes.get(at..at + n).ok_or_else(bad)?.to_vec();
        at += n;
        let images = bytes
            .get(at..at + n * IMAGE_BYTES)
            .ok_or_else(bad)?
            .to_vec();
        at += n * IMAGE_BYTES;
        if labels.iter().any(|&l| l as usize >= CLASSES.len()) {
            return Err(bad());
        }
        Ok(ImageDataset {
            images,
            labels,
            ..empty()
        })
    };
    let train = split()?;
    let test = split()?;
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(Cifar10 { train, test })
}
