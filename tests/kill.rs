//! Crash safety, tested by killing: a real `shadergrad train images` child
//! is SIGKILLed at random moments, again and again, resuming each time from
//! its own checkpoint. Epochs are a few milliseconds long, so many kills
//! land while a checkpoint is being written. After every kill the latest
//! checkpoint must load (its checksum included), never be older than the
//! one before, and `--resume` must continue from it; at the end a resumed
//! run finishes and its history holds every epoch exactly once.

mod common;

use shadergrad::io::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("target/tmp is writable");
    d
}

/// Two classes any resize keeps apart: horizontal and vertical stripes.
fn write_tree(root: &Path) {
    for (c, class) in ["horizontal", "vertical"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).expect("class folder");
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                let on = if c == 0 {
                    (y + i) % 4 < 2
                } else {
                    (x + i) % 4 < 2
                };
                image::Rgb(if on {
                    [220, 40 + i as u8 * 9, 30]
                } else {
                    [20, 30, 200]
                })
            });
            img.save(dir.join(format!("{i:02}.png"))).expect("save png");
        }
    }
}

fn train(data: &Path, out: &Path, cache: &Path, epochs: usize, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadergrad"));
    cmd.args(["train", "images", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--size",
            "18x18",
            "--batch",
            "8",
            "--val-fraction",
            "0.25",
            "--device",
            "cpu",
        ])
        .args(["--epochs", &epochs.to_string()])
        .env("SHADERGRAD_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume").arg(out.join("checkpoint.safetensors"));
    }
    cmd
}

fn epoch_of(ck: &checkpoint::Checkpoint) -> usize {
    ck.metadata["epoch"].parse().expect("an epoch number")
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let root = temp("run");
    let (data, out, cache) = (root.join("data"), root.join("out"), root.join("cache"));
    write_tree(&data);
    let ck_path = out.join("checkpoint.safetensors");
    // Kill delays from 100 to 1500 ms, the same every run.
    let delays = common::data(25, 7);
    let (mut kills, mut loaded, mut last_epoch) = (0, 0, 0usize);
    let started = Instant::now();
    // Enough epochs that no run finishes before it is killed.
    const EPOCHS: usize = 100_000;
    for (round, delay) in delays.iter().enumerate() {
        let resume = ck_path.exists();
        let mut child = train(&data, &out, &cache, EPOCHS, resume)
            .spawn()
            .expect("start shadergrad");
        // Start-up (decoding, the model) takes a few hundred milliseconds;
        // kill from before the first checkpoint to well after it.
        std::thread::sleep(Duration::from_millis(100 + ((delay + 1.0) * 700.0) as u64));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut err)
                .ok();
            panic!("round {round}: the run ended by itself ({status}) before the kill:\n{err}");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
        if ck_path.exists() {
            let ck = checkpoint::load(&ck_path).unwrap_or_else(|e| {
                panic!("round {round}: the checkpoint left by a kill does not load: {e}")
            });
            let epoch = epoch_of(&ck);
            assert!(
                epoch >= last_epoch,
                "round {round}: the checkpoint went back from epoch {last_epoch} to {epoch}"
            );
            last_epoch = epoch;
            loaded += 1;
        }
    }
    assert!(
        loaded >= 20,
        "only {loaded} of {kills} kills left a checkpoint behind: kill later"
    );
    assert!(
        last_epoch >= 5,
        "the runs got to epoch {last_epoch} only: kill later or make epochs shorter"
    );
    // The last resume runs to the end: two epochs past the checkpoint.
    let target = last_epoch + 2;
    let done = train(&data, &out, &cache, target, true)
        .output()
        .expect("run shadergrad");
    assert!(
        done.status.success(),
        "the final resume failed:\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let ck = checkpoint::load(&ck_path).expect("final checkpoint loads");
    let csv = &ck.metadata["metrics_csv"];
    let epochs: Vec<usize> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(
        epochs,
        (1..=target).collect::<Vec<_>>(),
        "the history should hold every epoch once:\n{csv}"
    );
    println!(
        "{kills} SIGKILLs in {:.1} s, {loaded} checkpoints loaded after a kill, epoch {last_epoch} reached, final resume to {target} complete",
        started.elapsed().as_secs_f64()
    );
}
