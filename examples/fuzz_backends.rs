//! Differential fuzzing of the backends, for as long as you like:
//!
//!     cargo run --release --example fuzz_backends -- --cases 2000 [--seed S] [--save]
//!
//! Each case is a random op graph (see `tests/common/graphgen.rs`) run on
//! the cpu backend and on the first GPU adapter (`WGPU_BACKEND` picks the
//! API), forward values and gradients compared. A failing graph prints its
//! seed and is shrunk to a small reproducer; `--save` writes it to
//! `tests/regressions/differential/seed-<S>.json`, where the test suite
//! replays it from then on.

#[path = "../tests/common/graphgen.rs"]
mod graphgen;

use graphgen::Outcome;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cases = 500u64;
    let mut first = 1_000_000u64;
    let mut save = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<u64, Box<dyn std::error::Error>> {
            let v = args.next().ok_or(format!("{name} needs a number"))?;
            Ok(v.parse()
                .map_err(|_| format!("{name}: not a number: {v}"))?)
        };
        match a.as_str() {
            "--cases" => cases = value("--cases")?,
            "--seed" => first = value("--seed")?,
            "--save" => save = true,
            "-h" | "--help" => {
                println!("fuzz_backends [--cases N] [--seed FIRST] [--save]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }
    let gpu = shadergrad::Device::gpu(0)?;
    println!("cpu vs {gpu}, seeds {first}..{}", first + cases);
    let start = Instant::now();
    let (mut passed, mut rejected, mut failed) = (0, 0, 0);
    let mut worst = (0f64, 0u64);
    let mut graphs = Vec::new();
    for seed in first..first + cases {
        let g = graphgen::generate(seed);
        match graphgen::check(&g, gpu) {
            Outcome::Pass(r) => {
                passed += 1;
                if r > worst.0 {
                    worst = (r, seed);
                }
            }
            Outcome::Rejected(e) => {
                rejected += 1;
                println!("seed {seed}: rejected by the cpu backend too: {e}");
            }
            Outcome::Fail(e) => {
                failed += 1;
                println!("seed {seed}: FAIL: {e}");
                let small =
                    graphgen::shrink(&g, |c| matches!(graphgen::check(c, gpu), Outcome::Fail(_)));
                println!(
                    "shrunk to {} nodes:\n{}",
                    small.nodes.len(),
                    graphgen::describe(&small)
                );
                if let Outcome::Fail(e) = graphgen::check(&small, gpu) {
                    println!("  -> {e}");
                }
                let json = serde_json::to_string_pretty(&small)?;
                if save {
                    let path = format!(
                        "{}/tests/regressions/differential/seed-{seed}.json",
                        env!("CARGO_MANIFEST_DIR")
                    );
                    std::fs::write(&path, json + "\n")?;
                    println!("saved {path}");
                } else {
                    println!("{json}");
                }
            }
        }
        graphs.push(g);
    }
    let nodes: usize = graphs.iter().map(|g| g.nodes.len()).sum();
    let covered = graphgen::coverage(&graphs);
    println!(
        "{cases} graphs ({nodes} nodes) in {:.1} s: {passed} agreed, {failed} differed, {rejected} rejected; \
         worst agreement {:.2} of the tolerance (seed {})",
        start.elapsed().as_secs_f64(),
        worst.0,
        worst.1
    );
    println!(
        "op kinds drawn: {} of {}: {covered:?}",
        covered.len(),
        graphgen::OP_KINDS
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
