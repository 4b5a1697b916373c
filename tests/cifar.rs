//! CIFAR-10 loading (every layout, every kind of bad input), checkpoints,
//! resume, and the seed CNN learning on a slice of the real data.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shadergrad::data::cifar10::{self, Cifar10};
use shadergrad::data::ImageDataset;
use shadergrad::io::checkpoint;
use shadergrad::nn::{named_tensors, Module};
use shadergrad::train::{self, Observer, StepInfo, TrainConfig};
use shadergrad::Result;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shadergrad-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Deterministic pixels and labels: image i of a split has label i % 10.
fn synthetic(n: usize, salt: u8) -> ImageDataset {
    ImageDataset {
        images: (0..n * 3072)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        channels: 3,
        height: 32,
        width: 32,
    }
}

fn records(d: &ImageDataset) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..d.len() {
        out.push(d.labels[i]);
        out.extend_from_slice(&d.images[i * 3072..(i + 1) * 3072]);
    }
    out
}

/// The official binary layout: 5 training batches (train split evenly) and a test batch.
fn write_binary_dir(dir: &Path, data: &Cifar10) {
    let per = data.train.len() / 5;
    for b in 0..5 {
        let part = ImageDataset {
            images: data.train.images[b * per * 3072..(b + 1) * per * 3072].to_vec(),
            labels: data.train.labels[b * per..(b + 1) * per].to_vec(),
            ..data.train.clone()
        };
        std::fs::write(
            dir.join(format!("data_batch_{}.bin", b + 1)),
            records(&part),
        )
        .expect("write");
    }
    std::fs::write(dir.join("test_batch.bin"), records(&data.test)).expect("write");
}

fn png(chw: &[u8], side: u32) -> Vec<u8> {
    let plane = (side * side) as usize;
    let mut img = image::RgbImage::new(side, side);
    for (i, px) in img.pixels_mut().enumerate() {
        let c = |k: usize| chw.get(k * plane + i).copied().unwrap_or(0);
        *px = image::Rgb([c(0), c(1), c(2)]);
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("png");
    bytes
}

/// Image-folder archive entries: `cifar/{split}/{class}/{i}.png`.
fn folder_entries(data: &Cifar10) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (split, d) in [("train", &data.train), ("test", &data.test)] {
        for i in 0..d.len() {
            let class = cifar10::CLASSES[d.labels[i] as usize];
            out.push((
                format!("cifar/{split}/{class}/{i:04}.png"),
                png(&d.images[i * 3072..(i + 1) * 3072], 32),
            ));
        }
    }
    out
}

fn write_tar_gz(path: &Path, entries: &[(String, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes.as_slice())
            .expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gz");
}

fn small() -> Cifar10 {
    Cifar10 {
        train: synthetic(20, 0),
        test: synthetic(10, 7),
    }
}

/// Loaded data equals the source up to the order of examples.
fn same_examples(a: &ImageDataset, b: &ImageDataset) {
    let key = |d: &ImageDataset| {
        let mut v: Vec<(u8, Vec<u8>)> = (0..d.len())
            .map(|i| (d.labels[i], d.images[i * 3072..(i + 1) * 3072].to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(key(a), key(b));
}

#[test]
fn loads_every_layout() {
    let data = small();
    // binary batches in a folder
    let bin = temp_dir("bin");
    write_binary_dir(&bin, &data);
    assert_eq!(cifar10::load_uncached(&bin).expect("binary dir"), data);
    // ...and as the official archive layout
    let entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&bin)
        .expect("dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (
                format!(
                    "cifar-10-batches-bin/{}",
                    p.file_name().expect("name").to_string_lossy()
                ),
                std::fs::read(&p).expect("read"),
            )
        })
        .collect();
    let archive = bin.join("cifar-10-binary.tar.gz");
    write_tar_gz(&archive, &entries);
    assert_eq!(
        cifar10::load_uncached(&archive).expect("binary archive"),
        data
    );
    // find() locates the archive inside a folder passed as --data
    let root = temp_dir("find");
    std::fs::copy(&archive, root.join("cifar-10-binary.tar.gz")).expect("copy");
    assert_eq!(
        cifar10::find(Some(&root)).expect("find"),
        root.join("cifar-10-binary.tar.gz")
    );
    // image folders, as an archive and as a tree (PNG: lossless, so pixels compare exactly)
    let folders = temp_dir("folders");
    let tgz = folders.join("cifar.tar.gz");
    write_tar_gz(&tgz, &folder_entries(&data));
    let from_tgz = cifar10::load_uncached(&tgz).expect("folder archive");
    same_examples(&from_tgz.train, &data.train);
    same_examples(&from_tgz.test, &data.test);
    for (name, bytes) in folder_entries(&data) {
        let p = folders.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
    let from_tree = cifar10::load_uncached(&folders.join("cifar")).expect("folder tree");
    same_examples(&from_tree.train, &data.train);
    // the cached second load gives the same data
    let cache = temp_dir("cache");
    let first = cifar10::load_cached(&tgz, Some(&cache)).expect("load");
    assert_eq!(
        std::fs::read_dir(&cache).expect("cache dir").count(),
        1,
        "one cache file written"
    );
    let second = cifar10::load_cached(&tgz, Some(&cache)).expect("cached");
    assert_eq!(first, second);
}

#[track_caller]
fn error_mentions(r: Result<Cifar10>, parts: &[&str]) {
    let msg = r.expect_err("should fail").to_string();
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?}");
    }
}

#[test]
fn bad_data_gives_clear_errors() {
    let data = small();
    let dir = temp_dir("bad");
    // truncated archive
    let good = dir.join("good.tar.gz");
    write_tar_gz(&good, &folder_entries(&data));
    let bytes = std::fs::read(&good).expect("read");
    let cut = dir.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    error_mentions(
        cifar10::load_uncached(&cut),
        &["cut.tar.gz", "truncated or corrupt"],
    );
    // a file that is not an image
    let mut entries = folder_entries(&data);
    entries[3].1 = b"definitely not a jpeg".to_vec();
    let name = entries[3].0.clone();
    let notimg = dir.join("notimg.tar.gz");
    write_tar_gz(&notimg, &entries);
    error_mentions(
        cifar10::load_uncached(&notimg),
        &[&name, "not a decodable image"],
    );
    // an image of the wrong size
    let mut entries = folder_entries(&data);
    entries[5].1 = png(&[9u8; 3 * 28 * 28], 28);
    let wrong = dir.join("wrong.tar.gz");
    write_tar_gz(&wrong, &entries);
    error_mentions(
        cifar10::load_uncached(&wrong),
        &[&entries[5].0, "28x28", "32x32"],
    );
    // a label out of range, and a truncated batch file
    let bin = temp_dir("badbin");
    write_binary_dir(&bin, &data);
    let mut batch = std::fs::read(bin.join("data_batch_2.bin")).expect("read");
    batch[3073] = 12;
    std::fs::write(bin.join("data_batch_2.bin"), &batch).expect("write");
    error_mentions(
        cifar10::load_uncached(&bin),
        &["data_batch_2.bin", "record 1", "label 12"],
    );
    std::fs::write(bin.join("data_batch_2.bin"), &batch[..5000]).expect("write");
    error_mentions(
        cifar10::load_uncached(&bin),
        &["data_batch_2.bin", "truncated"],
    );
    // nothing there: say where to download and which layouts work
    let empty = temp_dir("empty");
    let msg = cifar10::find(Some(&empty))
        .expect_err("nothing")
        .to_string();
    assert!(
        msg.contains("cifar-10-binary.tar.gz") && msg.contains("https://"),
        "{msg}"
    );
}

fn config(out: &Path, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::seed_cnn(out.to_path_buf());
    cfg.epochs = epochs;
    cfg.batch_size = 8;
    cfg.eval_batch = 16;
    cfg
}

fn weights(model: &dyn Module) -> Vec<(String, Vec<f32>)> {
    named_tensors(model)
        .into_iter()
        .map(|(n, p)| (n, p.get().to_vec().expect("weights")))
        .collect()
}

fn run(
    cfg: &TrainConfig,
    data: &Cifar10,
    obs: &mut dyn Observer,
) -> (shadergrad::nn::Sequential, train::TrainSummary) {
    shadergrad::manual_seed(cfg.seed);
    let mut model = shadergrad::models::seed_cnn().expect("model");
    let s = train::train(
        cfg,
        &mut model,
        &Arc::new(data.train.clone()),
        &Arc::new(data.test.clone()),
        obs,
    )
    .expect("train");
    (model, s)
}

/// Stops after `after` steps, like a Ctrl-C mid-epoch.
struct StopAfter(usize, usize);
impl Observer for StopAfter {
    fn step(&mut self, _: &StepInfo) {
        self.1 += 1;
    }
    fn should_stop(&self) -> bool {
        self.1 >= self.0
    }
}

#[test]
fn resume_gives_the_same_weights() {
    let data = Cifar10 {
        train: synthetic(40, 1),
        test: synthetic(16, 2),
    };
    // uninterrupted: 2 epochs
    let straight = temp_dir("straight");
    let (full, s) = run(&config(&straight, 2), &data, &mut train::Quiet);
    assert_eq!(s.history.len(), 2);
    // stopped mid-epoch 1 after 3 of 5 steps, resumed to the end
    let split = temp_dir("split");
    let (_, s1) = run(&config(&split, 2), &data, &mut StopAfter(3, 0));
    assert!(s1.stopped_early && s1.history.is_empty());
    let mut cfg = config(&split, 2);
    cfg.resume = Some(s1.checkpoint.clone());
    let (resumed, s2) = run(&cfg, &data, &mut train::Quiet);
    assert_eq!(
        weights(&resumed),
        weights(&full),
        "mid-epoch resume must reproduce the weights exactly"
    );
    assert_eq!(s2.history.len(), 2);
    assert_eq!(s2.history[1].test_accuracy(), s.history[1].test_accuracy());
    // through the binary: 1 epoch, then --resume to 2 epochs
    let bin_dir = temp_dir("bin-resume");
    let data_dir = temp_dir("bin-data");
    write_binary_dir(&data_dir, &data);
    let exe = env!("CARGO_BIN_EXE_shadergrad");
    let train_cmd = |out: &Path, epochs: &str, resume: Option<&Path>| {
        let mut c = std::process::Command::new(exe);
        c.args([
            "train", "cifar10", "--batch", "8", "--epochs", epochs, "--json", "--device", "cpu",
        ])
        .arg("--data")
        .arg(&data_dir)
        .arg("--out")
        .arg(out)
        .env("SHADERGRAD_CACHE", bin_dir.join("cache"));
        if let Some(r) = resume {
            c.arg("--resume").arg(r);
        }
        let o = c.output().expect("run shadergrad");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a = bin_dir.join("a");
    let json = train_cmd(&a, "2", None);
    let summary: serde_json::Value =
        serde_json::from_str(json.lines().last().unwrap_or_default()).expect("one JSON line");
    assert_eq!(summary["epochs"], 2, "{json}");
    for key in [
        "model",
        "device",
        "train_loss",
        "test_accuracy",
        "images_per_sec",
        "seconds",
    ] {
        assert!(
            summary[key].is_string() || summary[key].is_number(),
            "{json} lacks {key}"
        );
    }
    let b = bin_dir.join("b");
    train_cmd(&b, "1", None);
    train_cmd(&b, "2", Some(&b.join("checkpoint.safetensors")));
    let ca = checkpoint::load(&a.join("checkpoint.safetensors")).expect("a");
    let cb = checkpoint::load(&b.join("checkpoint.safetensors")).expect("b");
    assert_eq!(
        ca.tensors, cb.tensors,
        "--resume must give the weights of the uninterrupted run"
    );
    // metrics: csv with a row per epoch, and a PNG plot
    let csv = std::fs::read_to_string(b.join("metrics.csv")).expect("csv");
    assert_eq!(train::parse_metrics_csv(&csv).len(), 2, "{csv}");
    let png_bytes = std::fs::read(b.join("metrics.png")).expect("png");
    assert_eq!(&png_bytes[1..4], b"PNG");
    // eval prints accuracy and a confusion matrix
    let o = std::process::Command::new(exe)
        .args(["eval", "cifar10", "--device", "cpu"])
        .arg("--data")
        .arg(&data_dir)
        .arg("--checkpoint")
        .arg(b.join("checkpoint.safetensors"))
        .env("SHADERGRAD_CACHE", bin_dir.join("cache"))
        .output()
        .expect("eval");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && text.contains("test accuracy")
            && text.contains("confusion")
            && text.contains("truck"),
        "{text}"
    );
}

#[test]
fn checkpoint_of_another_model_lists_mismatches() {
    let dir = temp_dir("mismatch");
    let path = dir.join("other.safetensors");
    let model = shadergrad::models::seed_cnn().expect("model");
    let mut tensors: Vec<(String, shadergrad::Tensor)> = named_tensors(&model)
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    tensors.retain(|(n, _)| n != "fc2.bias");
    tensors[0].1 = shadergrad::Tensor::zeros(&[16, 3, 3, 3]);
    tensors.push(("extra.weight".into(), shadergrad::Tensor::zeros(&[2])));
    let meta = [("model".to_string(), "other-net".to_string())]
        .into_iter()
        .collect();
    checkpoint::save(&path, &tensors, meta).expect("save");
    let msg = checkpoint::load(&path)
        .expect("load")
        .restore(&model, &path)
        .expect_err("mismatch")
        .to_string();
    for part in [
        "other-net",
        "conv1.weight",
        "[16, 3, 3, 3]",
        "fc2.bias: missing",
        "extra.weight",
    ] {
        assert!(msg.contains(part), "{msg:?} should mention {part:?}");
    }
    // a truncated checkpoint is an error, not a panic
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 3]).expect("write");
    let msg = checkpoint::load(&path).expect_err("truncated").to_string();
    assert!(msg.contains("truncated or corrupt"), "{msg}");
}

/// Records the loss after each step.
#[derive(Default)]
struct Losses(Vec<f32>, usize);
impl Observer for Losses {
    fn step(&mut self, s: &StepInfo) {
        // StepInfo carries the running mean; recover each step's loss from it.
        let n = self.0.len() as f32;
        let prev = self.0.iter().sum::<f32>();
        self.0.push(s.loss * (n + 1.0) - prev);
        self.1 = s.batch;
    }
}

/// The seed CNN on 4,096 real CIFAR-10 images (128 steps of 32) on the cpu
/// backend: the loss must fall. Needs ../shared/data (or $SHADERGRAD_DATA);
/// CI has it. (A software GPU needs seconds per step; the GPU's share of
/// this is `seed_cnn_trains_alike_on_both_backends`.)
#[test]
fn seed_cnn_learns_on_real_data() -> Result<()> {
    let path = cifar10::find(None)?;
    let data = cifar10::load(&path)?;
    let data = Cifar10 {
        train: data.train.sample(4096, 0),
        test: data.test.sample(256, 0),
    };
    let out = temp_dir("real");
    let mut cfg = TrainConfig::seed_cnn(out);
    cfg.epochs = 1;
    let mut losses = Losses::default();
    let (_, s) = run(&cfg, &data, &mut losses);
    let first: f32 = losses.0[..8].iter().sum::<f32>() / 8.0;
    let last: f32 = losses.0[losses.0.len() - 8..].iter().sum::<f32>() / 8.0;
    assert!(
        first > 2.2,
        "initial loss {first} should be near ln(10) = 2.30"
    );
    eprintln!(
        "seed-cnn on 4096 images: loss {first} -> {last}, test accuracy {}",
        s.history[0].test_accuracy()
    );
    assert!(
        last < 2.1 && last < first - 0.15,
        "loss {first} -> {last} should fall below 2.1"
    );
    assert!(
        s.history[0].test_accuracy() > 0.2,
        "test accuracy {}",
        s.history[0].test_accuracy()
    );
    let _ = std::io::stderr().flush();
    Ok(())
}

/// The seed CNN on 640 real images (40 steps of 16, Adam at 2e-3 so that
/// the loss moves within so few steps), from the same seed on
/// the cpu backend and on the GPU: the per-step losses agree and fall on
/// both. Initial weights and shuffles are the same bits on both backends;
/// only rounding differs (summation order in GEMMs and reductions), so the
/// first steps agree closely and later ones may drift a little.
#[test]
fn seed_cnn_trains_alike_on_both_backends() -> Result<()> {
    let Some(gpu) = common::gpu_device() else {
        return Ok(());
    };
    let path = cifar10::find(None)?;
    let data = cifar10::load(&path)?;
    let data = Cifar10 {
        train: data.train.sample(640, 0),
        test: data.test.sample(64, 0),
    };
    let losses_on = |device: shadergrad::Device, name: &str| {
        shadergrad::with_device(device, || {
            let mut cfg = TrainConfig::seed_cnn(temp_dir(name));
            cfg.epochs = 1;
            cfg.batch_size = 16;
            cfg.lr = 2e-3;
            cfg.eval_batch = 64;
            let mut losses = Losses::default();
            let (_, s) = run(&cfg, &data, &mut losses);
            (losses.0, s.history[0].test_accuracy())
        })
    };
    let (cpu, cpu_acc) = losses_on(shadergrad::Device::Cpu, "alike-cpu");
    let (gpu, gpu_acc) = losses_on(gpu, "alike-gpu");
    eprintln!("cpu losses {cpu:?} (test accuracy {cpu_acc})\ngpu losses {gpu:?} (test accuracy {gpu_acc})");
    assert_eq!(cpu.len(), 40);
    assert_eq!(gpu.len(), 40);
    for i in 0..5 {
        assert!(
            (cpu[i] - gpu[i]).abs() < 2e-3,
            "step {i}: cpu loss {} vs gpu loss {}",
            cpu[i],
            gpu[i]
        );
    }
    for i in 5..40 {
        assert!(
            (cpu[i] - gpu[i]).abs() < 5e-2,
            "step {i}: cpu loss {} vs gpu loss {}",
            cpu[i],
            gpu[i]
        );
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    for (name, l) in [("cpu", &cpu), ("gpu", &gpu)] {
        assert!(
            mean(&l[35..]) < mean(&l[..5]) - 0.03,
            "{name}: the mean loss of the last 5 steps should be 0.03 below the first 5's ({}), got {}",
            mean(&l[..5]),
            mean(&l[35..])
        );
    }
    Ok(())
}
