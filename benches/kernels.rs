//! `cargo bench`: GFLOP/s of the CPU backend's matmul and the reference CNN's
//! convolutions. `cargo bench --bench kernels -- --json` prints JSON lines
//! (what `benches/peers/compare_kernels.py` reads).

use std::time::Duration;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let budget = Duration::from_millis(
        std::env::var("SHADERGRAD_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    match shadergrad::bench::cpu_kernels(budget, |_| true) {
        Ok(results) => print!("{}", shadergrad::bench::report(&results, json)),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
