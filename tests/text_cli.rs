//! The text commands through the binary: `train sst2` on a small generated
//! SST-2 folder, `--resume`, `classify` on its checkpoint, `embed` with
//! MiniLM, and their bad-input errors.

mod common;

use common::{stderr_of_failure, stdout_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env("SHADERGRAD_DEVICE", "cpu")
        .output()
        .expect("run shadergrad")
}

/// An SST-2 shaped folder whose label is decided by one word.
fn write_sst2(dir: &Path) {
    std::fs::create_dir_all(dir).expect("temp dir");
    let filler = ["the", "film", "was", "a", "story", "plot", "is", "music"];
    let mut rng = 11u64;
    let mut next = |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize % n
    };
    let mut make = |n: usize, header: &str| {
        let mut s = format!("{header}\n");
        for _ in 0..n {
            let positive = next(2) == 1;
            let mut words: Vec<&str> = (0..2 + next(5)).map(|_| filler[next(8)]).collect();
            words.insert(next(words.len()), if positive { "great" } else { "dull" });
            if header.starts_with("label") {
                s += &format!("{}\t{}\n", positive as i32, words.join(" "));
            } else {
                s += &format!("{}\t{}\n", words.join(" "), positive as i32);
            }
        }
        s
    };
    std::fs::write(dir.join("train.tsv"), make(400, "sentence\tlabel")).expect("write");
    std::fs::write(dir.join("dev.tsv"), make(100, "label\tcontent")).expect("write");
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sg-textcli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

#[test]
fn train_resume_and_classify() {
    let data = temp("data");
    write_sst2(&data);
    let out = temp("run");
    let (data_s, out_s) = (data.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let common = [
        "train",
        "sst2",
        "--model",
        "transformer",
        "--data",
        data_s,
        "--out",
        out_s,
        "--dim",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--batch",
        "16",
        "--lr",
        "3e-3",
        "--json",
    ];
    let json = stdout_of(&run(&[&common[..], &["--epochs", "2"]].concat()));
    assert!(json.contains("\"epochs\": 2"), "{json}");
    let ck = out.join("checkpoint.safetensors");
    let ck_s = ck.to_str().expect("utf-8");
    assert!(out.join("metrics.csv").is_file() && out.join("metrics.png").is_file());
    // Resume to 6 epochs: the history continues.
    let json = stdout_of(&run(
        &[&common[..], &["--epochs", "6", "--resume", ck_s]].concat()
    ));
    assert!(json.contains("\"epochs\": 6"), "{json}");
    let dev: f32 = json
        .split("\"dev_accuracy\": ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .expect("dev_accuracy in the JSON line");
    assert!(dev >= 0.95, "dev accuracy {dev}: {json}");

    let text = stdout_of(&run(&[
        "classify",
        "--checkpoint",
        ck_s,
        "the plot was great",
        "dull music",
    ]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("positive\t"), "{text}");
    assert!(lines[1].starts_with("negative\t"), "{text}");
    let p: f32 = lines[0]
        .split('\t')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("probability");
    assert!(p > 0.5 && p <= 1.0, "{text}");
    let json = stdout_of(&run(&["classify", "--checkpoint", ck_s, "--json", "great"]));
    assert!(json.contains("\"label\": \"positive\""), "{json}");

    // Bad input: an empty sentence, an over-long one with --no-truncate, a
    // checkpoint of another kind, an unknown model.
    let err = stderr_of_failure(&run(&["classify", "--checkpoint", ck_s, "great", ""]));
    assert!(err.contains("sentence 2") && err.contains("empty"), "{err}");
    let long = vec!["film"; 80].join(" ");
    let err = stderr_of_failure(&run(&[
        "classify",
        "--checkpoint",
        ck_s,
        "--no-truncate",
        &long,
    ]));
    assert!(err.contains("80 words") && err.contains("64"), "{err}");
    let o = run(&["classify", "--checkpoint", ck_s, &long]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: 1 sentences"));
    stdout_of(&o);
    let tsv = data.join("train.tsv");
    let err = stderr_of_failure(&run(&[
        "classify",
        "--checkpoint",
        tsv.to_str().expect("utf-8"),
        "great",
    ]));
    assert!(
        err.contains("train.tsv") && err.contains("safetensors"),
        "{err}"
    );
    let err = stderr_of_failure(&run(&[
        "train", "sst2", "--model", "lstm", "--data", data_s,
    ]));
    assert!(err.contains("lstm") && err.contains("minilm"), "{err}");
    std::fs::remove_dir_all(&data).ok();
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn embed_prints_one_json_array_per_sentence() {
    let dir = PathBuf::from("../shared/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("skipping: MiniLM not found at {}", dir.display());
        return;
    }
    let dir_s = dir.to_str().expect("utf-8");
    let text = stdout_of(&run(&[
        "embed",
        "--model",
        dir_s,
        "Hello",
        "A man is playing a guitar.",
    ]));
    let rows: Vec<Vec<f32>> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON array"))
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.len(), 384);
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // From tests/data/minilm_reference.json ("Hello").
    assert!((rows[0][0] - -0.0627717).abs() < 1e-4, "{}", rows[0][0]);
    let err = stderr_of_failure(&run(&[
        "embed",
        "--model",
        dir_s,
        "--max-len",
        "4",
        "--no-truncate",
        "one two three four",
    ]));
    assert!(err.contains("6 tokens") && err.contains("4"), "{err}");
    let err = stderr_of_failure(&run(&["embed", "--model", "/nonexistent/model", "hi"]));
    assert!(
        err.contains("/nonexistent/model") && err.contains("config.json"),
        "{err}"
    );
}
