//! `cargo bench`: the harness of `shadergrad bench` on the cpu backend
//! (every entry; `SHADERGRAD_BENCH_MS` per entry, default 1000). Arguments
//! after `--` filter entries as the CLI's do, e.g. `cargo bench -- matmul`.

use std::time::Duration;

use shadergrad::bench;

fn main() {
    let budget = Duration::from_millis(
        std::env::var("SHADERGRAD_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let mut opts = bench::Options::new(shadergrad::Device::Cpu, budget);
    // cargo passes `--bench`; everything else names entries.
    opts.filters = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut shown = 0;
    let result = bench::run(&opts, |report| {
        if shown == 0 && report.entries.is_empty() {
            print!("{}", bench::table_header(report, None));
        }
        for e in &report.entries[shown..] {
            print!("{}", bench::table_row(e, None));
        }
        shown = report.entries.len();
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
