//! `train images`, `predict` and `eval images` through the binary, on a
//! generated image-folder tree: three classes of stripes and checks whose
//! class survives any resize, drawn at mixed sizes as JPEG, RGB PNG, grey
//! PNG and RGBA PNG, with one corrupt file; and every bad input's error.

mod common;

use common::{stderr_of_failure, stdout_of};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLASSES: [&str; 3] = ["checks", "horizontal", "vertical"];

fn run_on(device: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env("SHADERGRAD_DEVICE", device)
        // Each test decodes its own tree; a shared cache would hide the decoding.
        .env("SHADERGRAD_CACHE", temp("cache"))
        .output()
        .expect("run shadergrad")
}

fn run(args: &[&str]) -> Output {
    run_on("cpu", args)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sg-images-{name}-{}", std::process::id()));
    d
}

fn fresh(name: &str) -> PathBuf {
    let d = temp(name);
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

/// One image of `class` (an index into CLASSES), `w`x`h`: four stripes (or
/// a 4x4 board) across whatever the size, in two random colours.
fn draw(class: usize, w: u32, h: u32, rng: &mut Lcg) -> image::RgbImage {
    let a = [
        rng.below(120) as u8,
        rng.below(120) as u8,
        rng.below(120) as u8,
    ];
    let b = [
        135 + rng.below(120) as u8,
        135 + rng.below(120) as u8,
        135 + rng.below(120) as u8,
    ];
    image::RgbImage::from_fn(w, h, |x, y| {
        let (bx, by) = (x * 8 / w, y * 8 / h);
        let on = match class {
            0 => (bx / 2 + by / 2) % 2 == 0,
            1 => by % 2 == 0,
            _ => bx % 2 == 0,
        };
        image::Rgb(if on { a } else { b })
    })
}

/// Save as JPEG, RGB PNG, grey PNG or RGBA PNG by `k`.
fn save(img: &image::RgbImage, dir: &Path, stem: &str, k: u32) -> PathBuf {
    let dynamic = image::DynamicImage::ImageRgb8(img.clone());
    let (path, result) = match k % 4 {
        0 => {
            let p = dir.join(format!("{stem}.jpg"));
            let r = dynamic.save_with_format(&p, image::ImageFormat::Jpeg);
            (p, r)
        }
        1 => {
            let p = dir.join(format!("{stem}.png"));
            let r = dynamic.save(&p);
            (p, r)
        }
        2 => {
            let p = dir.join(format!("{stem}.PNG"));
            let r = dynamic
                .to_luma8()
                .save_with_format(&p, image::ImageFormat::Png);
            (p, r)
        }
        _ => {
            let p = dir.join(format!("{stem}.png"));
            let r = dynamic.to_rgba8().save(&p);
            (p, r)
        }
    };
    result.expect("save image");
    path
}

/// `<root>/<class>/*`: `per_class` images each, sizes 24 to 63 pixels a
/// side, plus one file that is not an image at all.
fn write_tree(root: &Path, per_class: usize, seed: u64) {
    let mut rng = Lcg(seed);
    for (c, class) in CLASSES.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).expect("class dir");
        for i in 0..per_class {
            let (w, h) = (24 + rng.below(40), 24 + rng.below(40));
            let k = rng.below(4);
            save(&draw(c, w, h, &mut rng), &dir, &format!("{i:03}"), k);
        }
    }
    std::fs::write(
        root.join("vertical").join("broken.jpg"),
        b"not a jpeg at all",
    )
    .expect("write");
}

fn train_args<'a>(data: &'a str, out: &'a str, model: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train", "images", "--data", data, "--out", out, "--model", model, "--epochs", epochs,
        "--batch", "16", "--lr", "3e-3", "--json",
    ]
}

fn accuracy_of(stdout: &str) -> f64 {
    let line = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    v["test_accuracy"].as_f64().expect("test_accuracy")
}

/// Train on `device`, then predict freshly drawn images (not in the
/// tree) and evaluate a held-out tree.
fn train_predict_eval(device: &str, model: &str, epochs: &str, size: &str, bound: f64) {
    let name = format!("{device}-{model}").replace(':', "");
    let data = fresh(&format!("data-{name}"));
    // The software GPU runs about a GFLOP/s: a smaller tree there.
    write_tree(&data, if device == "cpu" { 40 } else { 20 }, 7);
    let out = fresh(&format!("run-{name}"));
    let (data_s, out_s) = (data.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let mut args = train_args(data_s, out_s, model, epochs);
    args.extend_from_slice(&["--size", size]);
    let o = run_on(device, &args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let acc = accuracy_of(&stdout_of(&o));
    assert!(
        acc >= bound,
        "validation accuracy {acc} < {bound} on {device}\n{err}"
    );
    // The corrupt file is skipped by name, not fatal.
    assert!(
        err.contains("broken.jpg") && err.contains("skipped"),
        "{err}"
    );
    let ck = out.join("checkpoint.safetensors");
    let ck_s = ck.to_str().expect("utf-8");

    let fresh_imgs = fresh(&format!("predict-{name}"));
    let mut rng = Lcg(99);
    let mut files = Vec::new();
    for i in 0..9 {
        let class = i % 3;
        let img = draw(class, 30 + rng.below(30), 30 + rng.below(30), &mut rng);
        files.push((save(&img, &fresh_imgs, &format!("img{i}"), i as u32), class));
    }
    let mut args = vec!["predict", "--checkpoint", ck_s, "--json", "--top", "2"];
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let stdout = stdout_of(&run_on(device, &args));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), files.len(), "{stdout}");
    let right = lines
        .iter()
        .zip(&files)
        .filter(|(v, (_, class))| v["top"][0]["class"] == CLASSES[*class])
        .count();
    assert!(right >= 8, "{right}/9 predicted right:\n{stdout}");
    for v in &lines {
        assert_eq!(v["top"].as_array().map(Vec::len), Some(2), "{v}");
        let p = v["top"][0]["probability"].as_f64().expect("probability");
        assert!((0.0..=1.0).contains(&p), "{v}");
    }

    let held_out = fresh(&format!("heldout-{name}"));
    write_tree(&held_out, 10, 1234);
    let eval_out = fresh(&format!("eval-{name}"));
    let o = run_on(
        device,
        &[
            "eval",
            "images",
            "--checkpoint",
            ck_s,
            "--data",
            held_out.to_str().expect("utf-8"),
            "--out",
            eval_out.to_str().expect("utf-8"),
            "--json",
        ],
    );
    let stdout = stdout_of(&o);
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("json")).expect("JSON");
    assert_eq!(v["images"], 30, "{v}");
    assert!(v["accuracy"].as_f64().expect("accuracy") >= bound, "{v}");
    let png = image::open(eval_out.join("confusion.png")).expect("confusion.png decodes");
    assert!(png.width() > 100 && png.height() > 100);
}

#[test]
fn seed_cnn_learns_a_folder_on_cpu() {
    train_predict_eval("cpu", "seed-cnn", "12", "24x24", 0.9);
}

#[test]
fn resnet8_learns_a_folder_on_cpu() {
    train_predict_eval("cpu", "resnet8", "6", "24x24", 0.9);
}

#[test]
fn seed_cnn_learns_a_folder_on_gpu() {
    if common::gpu_device().is_none() {
        return;
    }
    train_predict_eval("gpu", "seed-cnn", "5", "18x18", 0.9);
}

#[test]
fn bad_inputs_are_named() {
    let data = fresh("bad-data");
    write_tree(&data, 4, 3);
    let data_s = data.to_str().expect("utf-8");
    let out = fresh("bad-run");
    let out_s = out.to_str().expect("utf-8");
    let train = |extra: &[&str], data: &str| {
        let mut a = train_args(data, out_s, "seed-cnn", "1");
        if !extra.contains(&"--size") {
            a.extend_from_slice(&["--size", "24x24"]);
        }
        a.extend_from_slice(extra);
        run(&a)
    };

    // A file that does not decode, refused on request.
    let err = stderr_of_failure(&train(&["--bad-images", "error"], data_s));
    assert!(
        err.contains("broken.jpg") && err.contains("not a decodable image"),
        "{err}"
    );

    // An image too small to crop to --size, named.
    let small = fresh("bad-small");
    write_tree(&small, 3, 5);
    let tiny = draw(0, 12, 40, &mut Lcg(1));
    save(&tiny, &small.join("checks"), "tiny", 1);
    let small_s = small.to_str().expect("utf-8");
    let err = stderr_of_failure(&train(&["--bad-images", "error"], small_s));
    assert!(
        err.contains("tiny.png") && err.contains("smaller than --size"),
        "{err}"
    );
    // ... and skipped with a warning by default, or padded with --fit pad.
    let o = train(&[], small_s);
    stdout_of(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("tiny.png"));

    // A class folder without images.
    let empty = fresh("bad-empty");
    write_tree(&empty, 3, 5);
    std::fs::create_dir_all(empty.join("zebra")).expect("dir");
    let err = stderr_of_failure(&train(&[], empty.to_str().expect("utf-8")));
    assert!(err.contains("zebra") && err.contains("no .jpg"), "{err}");

    // A single class.
    let single = fresh("bad-single");
    std::fs::create_dir_all(single.join("only")).expect("dir");
    save(&draw(0, 30, 30, &mut Lcg(2)), &single.join("only"), "a", 1);
    save(&draw(0, 30, 30, &mut Lcg(3)), &single.join("only"), "b", 1);
    let err = stderr_of_failure(&train(&[], single.to_str().expect("utf-8")));
    assert!(
        err.contains("one class folder") && err.contains("only"),
        "{err}"
    );

    // A missing path, an unknown fit, a size too small for the model.
    let err = stderr_of_failure(&train(&[], "/nonexistent/photos"));
    assert!(
        err.contains("/nonexistent/photos") && err.contains("does not exist"),
        "{err}"
    );
    let err = stderr_of_failure(&train(&["--fit", "zoom"], data_s));
    assert!(err.contains("zoom"), "{err}");
    let err = stderr_of_failure(&train(&["--size", "12x12"], data_s));
    assert!(err.contains("18x18"), "{err}");

    // A checkpoint evaluated on a tree with classes it does not know.
    stdout_of(&train(&[], data_s));
    let ck = out.join("checkpoint.safetensors");
    let ck_s = ck.to_str().expect("utf-8");
    let other = fresh("bad-other");
    write_tree(&other, 2, 9);
    std::fs::rename(other.join("checks"), other.join("circles")).expect("rename");
    // ... or resumed on them, or at another size.
    let keep = fresh("bad-keep");
    std::fs::copy(&ck, keep.join("ck.safetensors")).expect("copy");
    let kept = keep.join("ck.safetensors");
    let kept_s = kept.to_str().expect("utf-8");
    let other_s = other.to_str().expect("utf-8");
    let err = stderr_of_failure(&train(&["--resume", kept_s], other_s));
    assert!(
        err.contains("circles") && err.contains("was trained with classes"),
        "{err}"
    );
    let err = stderr_of_failure(&train(&["--resume", kept_s, "--size", "20x20"], data_s));
    assert!(
        err.contains("--size 24x24") && err.contains("--size 20x20"),
        "{err}"
    );
    let err = stderr_of_failure(&run(&[
        "eval",
        "images",
        "--checkpoint",
        ck_s,
        "--data",
        other.to_str().expect("utf-8"),
        "--out",
        out_s,
    ]));
    assert!(
        err.contains("circles") && err.contains("does not know"),
        "{err}"
    );

    // predict: a missing file, a glob with no match, an undecodable file.
    let err = stderr_of_failure(&run(&["predict", "--checkpoint", ck_s, "/nonexistent.jpg"]));
    assert!(
        err.contains("/nonexistent.jpg") && err.contains("does not exist"),
        "{err}"
    );
    let pattern = format!("{}/*.webp", data_s);
    let err = stderr_of_failure(&run(&["predict", "--checkpoint", ck_s, &pattern]));
    assert!(err.contains("matches no files"), "{err}");
    let broken = data.join("vertical").join("broken.jpg");
    let o = run(&[
        "predict",
        "--checkpoint",
        ck_s,
        broken.to_str().expect("utf-8"),
    ]);
    let err = stderr_of_failure(&o);
    assert!(
        err.contains("broken.jpg") && err.contains("not a decodable image"),
        "{err}"
    );
    // A text checkpoint is not an image classifier.
    let meta_ck = out.join("not-images.safetensors");
    let tensor = shadergrad::Tensor::from_slice(&[1.0], &[1]).expect("tensor");
    let meta = [("task".to_string(), "text-classification".to_string())].into();
    shadergrad::io::checkpoint::save(&meta_ck, &[("w".into(), tensor)], meta).expect("save");
    let glob = format!("{}/checks/*", data_s);
    let err = stderr_of_failure(&run(&[
        "predict",
        "--checkpoint",
        meta_ck.to_str().expect("utf-8"),
        &glob,
    ]));
    assert!(err.contains("not an image classifier"), "{err}");
}

/// A tree with train/ and val/ splits, packed as a .tar.gz, reads the same
/// as the folder, and its val/ images become the validation set.
#[test]
fn splits_and_archives() {
    let root = fresh("split-tree");
    write_tree(&root.join("photos/train"), 6, 21);
    write_tree(&root.join("photos/val"), 2, 22);
    let archive = root.join("photos.tar.gz");
    let file = std::fs::File::create(&archive).expect("archive");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_dir_all("photos", root.join("photos"))
        .expect("tar");
    tar.into_inner().expect("tar").finish().expect("gz");
    for data in [root.join("photos"), archive] {
        let out = fresh("split-run");
        let (data_s, out_s) = (data.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
        let mut args = train_args(data_s, out_s, "seed-cnn", "1");
        args.extend_from_slice(&["--size", "24x24"]);
        let o = run(&args);
        stdout_of(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        // 6 per class, of which the broken file of each split is skipped.
        assert!(err.contains("18 train / 6 validation (val/)"), "{err}");
    }
    // A flat tree with --val-fraction 0: no evaluation, and no made-up
    // test figures (null, not 0 or NaN).
    let flat = root.join("photos/train");
    let out = fresh("split-none");
    let mut args = train_args(
        flat.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
        "seed-cnn",
        "1",
    );
    args.extend_from_slice(&["--size", "24x24", "--val-fraction", "0"]);
    let o = run(&args);
    let stdout = stdout_of(&o);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("json")).expect("JSON");
    assert!(v["test_accuracy"].is_null(), "{v}");
    assert!(v["train_loss"].is_number(), "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("18 train / 0 validation"));
}

/// `predict` reads a `train cifar10` checkpoint (no class names in its
/// metadata) as CIFAR-10's classes at 32x32, resizing other sizes.
#[test]
fn predict_reads_cifar10_checkpoints() {
    let dir = fresh("cifar-ck");
    let model = shadergrad::models::seed_cnn().expect("seed cnn");
    let tensors: Vec<(String, shadergrad::Tensor)> = shadergrad::nn::named_tensors(&model)
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    let ck = dir.join("cifar.safetensors");
    let meta = [("model".to_string(), "seed-cnn".to_string())].into();
    shadergrad::io::checkpoint::save(&ck, &tensors, meta).expect("save");
    let mut rng = Lcg(5);
    let a = save(&draw(0, 32, 32, &mut rng), &dir, "a", 1);
    let b = save(&draw(1, 50, 40, &mut rng), &dir, "b", 0);
    let stdout = stdout_of(&run(&[
        "predict",
        "--checkpoint",
        ck.to_str().expect("utf-8"),
        "--json",
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    ]));
    let cifar = shadergrad::data::cifar10::CLASSES;
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for v in lines {
        let top = v["top"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        for t in top {
            assert!(cifar.contains(&t["class"].as_str().expect("class")), "{v}");
        }
        let sum: f64 = top
            .iter()
            .map(|t| t["probability"].as_f64().expect("p"))
            .sum();
        assert!(sum <= 1.0001, "{v}");
    }
}
