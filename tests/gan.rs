//! Adversarial training end to end: the 2-D ring of Gaussians must be
//! covered (every mode, few stray samples) on both backends; a few DCGAN
//! steps agree across backends; GAN checkpoints resume bit for bit; bad
//! input gives errors that name the file and the fix.

mod common;
use std::path::PathBuf;

use shadergrad::data::ring::Ring;
use shadergrad::data::ImageDataset;
use shadergrad::models::gan::Gan;
use shadergrad::train::gan::{train_gan, GanConfig, QuietGan, RealData};
use shadergrad::train::gan::{GanObserver, GanStep};
use shadergrad::{Result, Tensor};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shadergrad-gan-{}-{}-{name}",
        std::process::id(),
        shadergrad::default_device().to_string().replace(':', "")
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The ring GAN, trained as `GanConfig::ring` does (the GPU runs the
/// same 3000 steps: fewer leave some seeds short of the bounds).
fn gan_ring_covers_the_modes() -> Result<()> {
    let cfg = GanConfig::ring(temp_dir("ring"));
    shadergrad::manual_seed(cfg.seed);
    let mut gan = Gan::ring(cfg.width, cfg.latent)?;
    let ring = Ring::default();
    let s = train_gan(&cfg, &mut gan, &RealData::Ring(ring), &mut QuietGan)?;
    let z = Tensor::randn_seeded(&[2000, cfg.latent], 42);
    let points = shadergrad::no_grad(|| gan.generate(&z))?.to_vec()?;
    let c = ring.coverage(&points, 0.1);
    eprintln!(
        "gan ring: {} steps at {:.0}/s, {c:?}, last step {:?}",
        s.steps, s.steps_per_sec, s.last
    );
    assert!(c.modes_covered >= 7, "{c:?}");
    assert!(c.high_quality >= 0.7, "{c:?}");
    Ok(())
}

/// Images with some structure (smooth colour gradients), 32x32 RGB.
fn images(n: usize, seed: u8) -> ImageDataset {
    let mut px = Vec::with_capacity(n * 3072);
    for i in 0..n {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let v = (x * (c + 1) * 4 + y * 3 + i * 17) as u8;
                    px.push(v.wrapping_add(seed));
                }
            }
        }
    }
    ImageDataset {
        images: px,
        labels: vec![0; n],
        channels: 3,
        height: 32,
        width: 32,
    }
}

fn tiny_dcgan(out: PathBuf) -> GanConfig {
    let mut cfg = GanConfig::dcgan(out);
    cfg.width = 8;
    cfg.batch_size = 8;
    cfg.steps = 4;
    cfg.sample_every = 2;
    cfg.checkpoint_every = 2;
    cfg.log_every = 1;
    cfg
}

/// Records each step.
#[derive(Default)]
struct Steps(Vec<GanStep>, usize);
impl GanObserver for Steps {
    fn step(&mut self, s: &GanStep, _: f32) {
        self.0.push(*s);
    }
    fn should_stop(&self) -> bool {
        self.1 > 0 && self.0.len() >= self.1
    }
}

fn dcgan_steps(device: shadergrad::Device, name: &str) -> Result<Vec<GanStep>> {
    shadergrad::with_device(device, || {
        let cfg = tiny_dcgan(temp_dir(name));
        shadergrad::manual_seed(cfg.seed);
        let mut gan = Gan::dcgan(cfg.width)?;
        let mut obs = Steps::default();
        let data = RealData::Images(std::sync::Arc::new(images(24, 3)));
        let s = train_gan(&cfg, &mut gan, &data, &mut obs)?;
        assert_eq!(s.grids.len(), 2, "a grid every 2 steps");
        assert!(s.grids.iter().all(|g| g.exists()));
        Ok(obs.0)
    })
}

/// A few DCGAN steps from one seed on the cpu backend and the GPU: the
/// same losses and discriminator outputs, up to rounding.
#[test]
fn dcgan_steps_agree_on_both_backends() -> Result<()> {
    let cpu = dcgan_steps(shadergrad::Device::Cpu, "agree-cpu")?;
    let Some(gpu) = common::gpu_device() else {
        return Ok(());
    };
    let gpu = dcgan_steps(gpu, "agree-gpu")?;
    eprintln!("cpu {cpu:?}\ngpu {gpu:?}");
    for (c, g) in cpu.iter().zip(&gpu) {
        for (a, b) in [
            (c.d_loss, g.d_loss),
            (c.g_loss, g.g_loss),
            (c.d_real, g.d_real),
            (c.d_fake, g.d_fake),
        ] {
            assert!(
                (a - b).abs() < 2e-3 * (1.0 + a.abs()),
                "step {}: cpu {c:?} gpu {g:?}",
                c.step
            );
        }
    }
    assert_eq!(cpu.len(), 4);
    Ok(())
}

/// Stopped after 3 of 4 steps and resumed, a run ends with the weights of
/// an uninterrupted one, bit for bit; a GAN checkpoint names its shape.
#[test]
fn dcgan_resume_gives_the_same_weights() -> Result<()> {
    use shadergrad::io::checkpoint;
    let data = RealData::Images(std::sync::Arc::new(images(24, 5)));
    let run = |dir: &str, stop: usize, resume: Option<PathBuf>| -> Result<PathBuf> {
        let mut cfg = tiny_dcgan(temp_dir(dir));
        cfg.resume = resume;
        shadergrad::manual_seed(cfg.seed);
        let mut gan = Gan::dcgan(cfg.width)?;
        let s = train_gan(&cfg, &mut gan, &data, &mut Steps(vec![], stop))?;
        Ok(s.checkpoint)
    };
    let straight = run("straight", 0, None)?;
    let split = run("split", 3, None)?;
    let resumed = run("resumed", 0, Some(split))?;
    let (a, b) = (checkpoint::load(&straight)?, checkpoint::load(&resumed)?);
    assert_eq!(
        a.tensors, b.tensors,
        "resume must reproduce the weights and optimizer state"
    );
    assert_eq!(a.metadata.get("step").map(String::as_str), Some("4"));
    // A different width is refused with the fix.
    let mut cfg = tiny_dcgan(temp_dir("wrong-width"));
    cfg.width = 16;
    cfg.resume = Some(straight);
    let mut gan = Gan::dcgan(16)?;
    let e = train_gan(&cfg, &mut gan, &data, &mut QuietGan)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("width 8") && e.contains("resume with the same"),
        "{e}"
    );
    Ok(())
}

/// Runs the binary; (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .args(["--device", "cpu"])
        .output()
        .expect("run shadergrad");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn fails_saying(args: &[&str], parts: &[&str]) {
    let (ok, _, err) = cli(args);
    assert!(!ok, "{args:?} should fail");
    for p in parts {
        assert!(err.contains(p), "{args:?}: {err:?} should mention {p:?}");
    }
}

/// `train gan`, `sample gan` and `eval gan` through the binary, and the
/// errors for bad input: each names the file and the fix. Reads CIFAR-10
/// from the data folders (as `seed_cnn_learns_on_real_data` does).
#[test]
fn gan_commands_and_their_errors() -> Result<()> {
    use shadergrad::io::checkpoint;
    use shadergrad::nn::named_tensors;
    let dir = temp_dir("cli");
    let s = |p: &std::path::Path| p.display().to_string();
    // A (tiny) generator through the binary.
    let run = dir.join("run");
    let (ok, out, err) = cli(&[
        "train",
        "gan",
        "--width",
        "4",
        "--batch",
        "8",
        "--steps",
        "3",
        "--limit-train",
        "64",
        "--sample-every",
        "3",
        "--json",
        "--out",
        &s(&run),
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).expect("one JSON line");
    assert_eq!(summary["steps"], 3, "{out}");
    assert!(summary["steps_per_sec"].is_number(), "{out}");
    for f in [
        "checkpoint.safetensors",
        "metrics.csv",
        "metrics.png",
        "samples/step-000003.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let gan_ck = run.join("checkpoint.safetensors");
    // A classifier checkpoint (untrained: the scores' plumbing is what counts here).
    shadergrad::manual_seed(0);
    let classifier = dir.join("classifier.safetensors");
    let model = shadergrad::models::seed_cnn()?;
    let tensors: Vec<(String, Tensor)> = named_tensors(&model)
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    checkpoint::save(
        &classifier,
        &tensors,
        [("model".to_string(), "seed-cnn".to_string())]
            .into_iter()
            .collect(),
    )?;
    // Samples: a grid, one file each, and .npy.
    let (grid, each, npy) = (
        dir.join("grid.png"),
        dir.join("each"),
        dir.join("samples.npy"),
    );
    let (ok, _, err) = cli(&[
        "sample",
        "gan",
        "--checkpoint",
        &s(&gan_ck),
        "--n",
        "10",
        "--out",
        &s(&grid),
        "--each",
        &s(&each),
        "--npy",
        &s(&npy),
    ]);
    assert!(ok, "{err}");
    assert!(grid.exists() && each.join("000009.png").exists() && npy.exists());
    // Scores of the generator, and of its .npy samples through --images.
    let (ok, out, err) = cli(&[
        "eval",
        "gan",
        "--checkpoint",
        &s(&gan_ck),
        "--classifier",
        &s(&classifier),
        "--n",
        "200",
        "--json",
    ]);
    assert!(ok, "{err}");
    for key in [
        "\"generated\"",
        "\"real\"",
        "\"untrained\"",
        "\"fcd\"",
        "\"kcd\"",
        "\"cs\"",
    ] {
        assert!(out.contains(key), "{out} lacks {key}");
    }
    let (ok, out, err) = cli(&[
        "eval",
        "gan",
        "--images",
        &s(&npy),
        "--classifier",
        &s(&classifier),
        "--n",
        "200",
    ]);
    assert!(
        ok && out.contains("images") && err.contains("scoring all 10 images"),
        "{out}{err}"
    );
    // Bad input.
    fails_saying(
        &[
            "eval",
            "gan",
            "--checkpoint",
            &s(&gan_ck),
            "--classifier",
            &s(&gan_ck),
        ],
        &[&s(&gan_ck), "not a CIFAR-10 classifier", "train cifar10"],
    );
    fails_saying(
        &[
            "eval",
            "gan",
            "--checkpoint",
            &s(&classifier),
            "--classifier",
            &s(&classifier),
        ],
        &[&s(&classifier), "not a GAN checkpoint"],
    );
    fails_saying(
        &[
            "eval",
            "gan",
            "--checkpoint",
            &s(&gan_ck),
            "--classifier",
            &s(&classifier),
            "--n",
            "20000",
        ],
        &["--n 20000", "10000"],
    );
    let missing = dir.join("nowhere.tar.gz");
    fails_saying(
        &[
            "train",
            "gan",
            "--data",
            &s(&missing),
            "--out",
            &s(&dir.join("x")),
        ],
        &[&s(&missing)],
    );
    let small = dir.join("small");
    std::fs::create_dir_all(&small).expect("dir");
    image::RgbImage::new(16, 16)
        .save(small.join("a.png"))
        .expect("png");
    fails_saying(
        &[
            "eval",
            "gan",
            "--images",
            &s(&small),
            "--classifier",
            &s(&classifier),
        ],
        &["a.png", "16x16", "32x32"],
    );
    let floats = dir.join("floats.npy");
    std::fs::write(&floats, b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32, 32, 3), }                                                            \n").expect("npy");
    fails_saying(
        &[
            "eval",
            "gan",
            "--images",
            &s(&floats),
            "--classifier",
            &s(&classifier),
        ],
        &["floats.npy", "uint8"],
    );
    Ok(())
}

backend_tests!(gan_ring_covers_the_modes);
