//! The `shadergrad` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shadergrad",
    version,
    about = "Train neural networks on any GPU through WGSL, or on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark kernels (GFLOP/s) on the CPU backend.
    Bench {
        /// Which kernels: all, matmul or conv.
        #[arg(default_value = "all")]
        which: String,
        /// Milliseconds to spend per kernel.
        #[arg(long, default_value_t = 1000)]
        ms: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List the devices shadergrad can run on.
    Devices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { which, ms, json } => bench(&which, ms, json),
        Command::Devices => {
            println!(
                "cpu: {} threads (rayon), f32, GEMM via the gemm crate",
                rayon::current_num_threads()
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(which: &str, ms: u64, json: bool) -> shadergrad::Result<()> {
    let keep = |name: &str| match which {
        "all" => true,
        "matmul" => name.starts_with("matmul"),
        "conv" => name.starts_with("conv"),
        _ => false,
    };
    if !["all", "matmul", "conv"].contains(&which) {
        return Err(shadergrad::Error::param(
            "bench",
            format!("unknown kernel set {which:?}; use all, matmul or conv"),
        ));
    }
    let results = shadergrad::bench::cpu_kernels(Duration::from_millis(ms), keep)?;
    print!("{}", shadergrad::bench::report(&results, json));
    Ok(())
}
