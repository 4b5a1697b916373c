//! The image-folder reader: fitting images to a size (exact pixels for
//! crop, pad and stretch), layouts and splits, the seeded validation split,
//! the decoded cache, and broken inputs.

use std::path::{Path, PathBuf};

use shadergrad::data::image_folder::{
    self, load_cached, load_uncached, prepare, split_off, BadImages, Fit, FolderOptions, Split,
};
use shadergrad::data::ImageDataset;

fn fresh(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sg-folder-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn opts(h: usize, w: usize, fit: Fit) -> FolderOptions {
    FolderOptions {
        size: (h, w),
        fit,
        bad_images: BadImages::Skip,
    }
}

/// The RGB pixel at (y, x) of a `[3, h, w]` image.
fn px(chw: &[u8], w: usize, h: usize, y: usize, x: usize) -> [u8; 3] {
    [0, 1, 2].map(|c| chw[c * h * w + y * w + x])
}

/// A `w`x`h` image: red in columns [a, b), blue elsewhere.
fn banded(w: u32, h: u32, a: u32, b: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, _| {
        if (a..b).contains(&x) {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    }))
}

#[test]
fn fits_images_to_the_size() -> shadergrad::Result<()> {
    // Same size: the pixels as they are, channel-major.
    let img = banded(4, 2, 1, 2);
    let chw = prepare(&img, (2, 4), Fit::Crop, "same")?;
    assert_eq!(chw.len(), 3 * 2 * 4);
    assert_eq!(px(&chw, 4, 2, 0, 0), [0, 0, 255]);
    assert_eq!(px(&chw, 4, 2, 1, 1), [255, 0, 0]);

    // Crop: a 40x20 image to 20x20 keeps the centre columns 10..30 at
    // scale 1, where red fills 10..30: all red.
    let chw = prepare(&banded(40, 20, 10, 30), (20, 20), Fit::Crop, "crop")?;
    assert!((0..20).all(|x| px(&chw, 20, 20, 10, x) == [255, 0, 0]));

    // Pad: a 40x20 image into 20x20 scales to 20x10 with black rows above
    // and below (5 each).
    let chw = prepare(&banded(40, 20, 0, 40), (20, 20), Fit::Pad, "pad")?;
    assert_eq!(px(&chw, 20, 20, 0, 10), [0, 0, 0]);
    assert_eq!(px(&chw, 20, 20, 4, 10), [0, 0, 0]);
    assert_eq!(px(&chw, 20, 20, 10, 10), [255, 0, 0]);
    assert_eq!(px(&chw, 20, 20, 19, 10), [0, 0, 0]);

    // Stretch: the left half red stays the left half.
    let chw = prepare(&banded(40, 20, 0, 20), (10, 10), Fit::Stretch, "stretch")?;
    assert_eq!(px(&chw, 10, 10, 5, 1), [255, 0, 0]);
    assert_eq!(px(&chw, 10, 10, 5, 8), [0, 0, 255]);

    // Grey and RGBA inputs become RGB.
    let grey =
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 3, image::Luma([77])));
    assert_eq!(prepare(&grey, (3, 3), Fit::Crop, "grey")?, vec![77; 27]);

    // Too small to crop: named, with the way out.
    let err = prepare(&banded(10, 30, 0, 5), (20, 20), Fit::Crop, "small.png").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("small.png") && msg.contains("--fit pad"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn parses_sizes_and_fits() {
    assert_eq!(image_folder::parse_size("64x48").ok(), Some((64, 48)));
    assert_eq!(image_folder::parse_size("32").ok(), Some((32, 32)));
    for bad in ["", "0x4", "axb", "5000x5000", "3x"] {
        assert!(image_folder::parse_size(bad).is_err(), "{bad:?}");
    }
    for name in Fit::NAMES {
        assert_eq!(Fit::parse(name).map(Fit::name).ok(), Some(name));
    }
    assert!(Fit::parse("zoom").unwrap_err().to_string().contains("zoom"));
}

fn write(path: &Path, img: &image::DynamicImage) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    img.save(path).expect("save");
}

#[test]
fn reads_layouts_and_splits() -> shadergrad::Result<()> {
    // Flat: <class>/<file>, classes numbered alphabetically.
    let flat = fresh("flat");
    write(&flat.join("zebra/a.png"), &banded(8, 8, 0, 8));
    write(&flat.join("ant/b.png"), &banded(8, 8, 0, 0));
    write(&flat.join("ant/c.png"), &banded(8, 8, 0, 0));
    std::fs::write(flat.join("notes.txt"), "not an image").expect("write");
    let f = load_uncached(&flat, &opts(8, 8, Fit::Crop))?;
    assert_eq!(f.classes, ["ant", "zebra"]);
    let train = f.split(Split::Train).expect("train");
    assert_eq!(train.labels, [0, 0, 1]);
    assert!(f.split(Split::Val).is_none());

    // Splits: train/ and test/ (and a stray file outside them, ignored).
    let tree = fresh("splits");
    write(&tree.join("train/cat/1.png"), &banded(8, 8, 0, 8));
    write(&tree.join("train/dog/1.png"), &banded(8, 8, 0, 0));
    write(&tree.join("test/dog/9.png"), &banded(8, 8, 0, 0));
    write(&tree.join("stray/x.png"), &banded(8, 8, 0, 0));
    let f = load_uncached(&tree, &opts(8, 8, Fit::Crop))?;
    assert_eq!(f.classes, ["cat", "dog"]);
    assert_eq!(f.split(Split::Train).map(ImageDataset::len), Some(2));
    assert_eq!(
        f.split(Split::Test).map(|d| d.labels.clone()),
        Some(vec![1])
    );

    // A test/ class that train/ lacks is named.
    write(&tree.join("test/cow/1.png"), &banded(8, 8, 0, 0));
    let msg = load_uncached(&tree, &opts(8, 8, Fit::Crop))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cow") && msg.contains("train/ does not have"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn validation_split_is_seeded_and_stratified() {
    // 10 of class 0, 5 of class 1, 1 of class 2.
    let labels: Vec<u8> = [vec![0; 10], vec![1; 5], vec![2; 1]].concat();
    let data = ImageDataset {
        images: (0..labels.len() as u8).collect(),
        labels,
        channels: 1,
        height: 1,
        width: 1,
    };
    let (train, val) = split_off(&data, 3, 0.2, 7).expect("split");
    assert_eq!(val.labels.iter().filter(|&&l| l == 0).count(), 2);
    assert_eq!(val.labels.iter().filter(|&&l| l == 1).count(), 1);
    // A class of one keeps it for training.
    assert!(train.labels.contains(&2) && !val.labels.contains(&2));
    // Disjoint, complete, and the same for the same seed.
    let mut all: Vec<u8> = [train.images.clone(), val.images.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, data.images);
    let again = split_off(&data, 3, 0.2, 7).expect("split");
    assert_eq!((again.0, again.1), (train, val.clone()));
    let other = split_off(&data, 3, 0.2, 8).expect("split");
    assert_ne!(other.1.images, val.images, "another seed, another split");
    assert!(split_off(&data, 3, 1.0, 7).is_err());
}

#[test]
fn cache_returns_the_same_and_notices_changes() -> shadergrad::Result<()> {
    let tree = fresh("cache-tree");
    let cache = fresh("cache-dir");
    write(&tree.join("a/1.png"), &banded(12, 12, 0, 6));
    write(&tree.join("b/1.png"), &banded(12, 12, 6, 12));
    let o = opts(12, 12, Fit::Crop);
    let first = load_cached(&tree, &o, Some(&cache))?;
    let files: Vec<_> = std::fs::read_dir(&cache).expect("cache").collect();
    assert_eq!(files.len(), 1, "one cache file");
    assert_eq!(load_cached(&tree, &o, Some(&cache))?, first);

    // A corrupt cache file is ignored (decoded again) and rewritten.
    let file = files[0].as_ref().expect("entry").path();
    std::fs::write(&file, b"SGFOLDR1 truncated").expect("corrupt");
    assert_eq!(load_cached(&tree, &o, Some(&cache))?, first);

    // Replacing an image (a new size) gives its new pixels.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&tree.join("a/1.png"), &banded(24, 12, 0, 24));
    let changed = load_cached(&tree, &o, Some(&cache))?;
    assert_ne!(changed, first);
    assert_eq!(changed, load_uncached(&tree, &o)?);
    Ok(())
}

/// Pack `dir` as `photos/...` into the .tar.gz `archive`.
fn tar_gz(dir: &Path, archive: &Path) {
    let file = std::fs::File::create(archive).expect("archive");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("photos", dir).expect("tar");
    tar.into_inner().expect("tar").finish().expect("gz");
}

#[test]
fn broken_inputs_are_named() {
    let o = opts(8, 8, Fit::Crop);
    // A truncated archive.
    let tree = fresh("broken");
    write(&tree.join("photos/a/1.png"), &banded(8, 8, 0, 8));
    write(&tree.join("photos/b/1.png"), &banded(8, 8, 0, 0));
    let archive = tree.join("photos.tar.gz");
    tar_gz(&tree.join("photos"), &archive);
    let whole = load_uncached(&archive, &o).expect("archive reads");
    assert_eq!(whole.classes, ["a", "b"]);
    // An empty class folder inside an archive is named too.
    std::fs::create_dir_all(tree.join("photos/c")).expect("dir");
    let with_empty = tree.join("with-empty.tar.gz");
    tar_gz(&tree.join("photos"), &with_empty);
    let msg = load_uncached(&with_empty, &o).unwrap_err().to_string();
    assert!(
        msg.contains("photos/c/ in") && msg.contains("no .jpg"),
        "{msg}"
    );
    std::fs::remove_dir(tree.join("photos/c")).expect("rmdir");
    let bytes = std::fs::read(&archive).expect("read");
    let cut = tree.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let msg = load_uncached(&cut, &o).unwrap_err().to_string();
    assert!(
        msg.contains("cut.tar.gz") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
    std::fs::write(&cut, b"plain text, not gzip").expect("write");
    let msg = load_uncached(&cut, &o).unwrap_err().to_string();
    assert!(msg.contains("cut.tar.gz"), "{msg}");

    // A folder with no images; a corrupt image refused on request.
    let empty = fresh("broken-empty");
    let msg = load_uncached(&empty, &o).unwrap_err().to_string();
    assert!(msg.contains("holds no .jpg"), "{msg}");
    std::fs::write(tree.join("photos/a/2.jpg"), b"\xff\xd8 not really").expect("write");
    let strict = FolderOptions {
        bad_images: BadImages::Fail,
        ..o.clone()
    };
    let msg = load_uncached(&tree.join("photos"), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2.jpg") && msg.contains("--bad-images skip"),
        "{msg}"
    );
    let skipped = load_uncached(&tree.join("photos"), &o).expect("skips");
    assert_eq!(skipped.skipped.len(), 1);
    assert!(skipped.skipped[0].contains("2.jpg"));
}
