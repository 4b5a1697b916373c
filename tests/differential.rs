//! Differential test of the backends: random op graphs (every primitive
//! and the composite ops; odd and size-1 shapes, broadcasting, views,
//! long fused chains, matmul, convolution, pooling, indexing, attention,
//! losses) on the cpu backend and the GPU, forward values and gradients.
//! A fixed budget of seeds runs here; `cargo run --release --example
//! fuzz_backends -- --cases N` runs longer and saves shrunk reproducers to
//! `tests/regressions/differential/`, which `regressions_still_pass` replays.

mod common;
#[path = "common/graphgen.rs"]
mod graphgen;

use graphgen::{Graph, Outcome};
use std::path::Path;

/// Cases per run of the test: a fixed list of seeds, so a failure here is
/// reproducible with the example's `--seed`.
const CASES: u64 = 400;

fn fail_with_reproducer(g: &Graph, gpu: shadergrad::Device, why: &str) -> ! {
    let small = graphgen::shrink(g, |c| matches!(graphgen::check(c, gpu), Outcome::Fail(_)));
    panic!(
        "seed {}: {why}\nshrunk to:\n{}\nas JSON (save under tests/regressions/differential/):\n{}",
        g.seed,
        graphgen::describe(&small),
        serde_json::to_string(&small).unwrap_or_default()
    );
}

#[test]
fn random_graphs_agree_between_cpu_and_gpu() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let mut rejected = Vec::new();
    let mut graphs = Vec::new();
    for seed in 0..CASES {
        let g = graphgen::generate(seed);
        match graphgen::check(&g, gpu) {
            Outcome::Pass(_) => {}
            Outcome::Rejected(e) => rejected.push(format!("seed {seed}: {e}")),
            Outcome::Fail(e) => fail_with_reproducer(&g, gpu, &e),
        }
        graphs.push(g);
    }
    // The generator only draws valid graphs; a rejection is a generator
    // gap or an op that refuses valid input.
    assert!(
        rejected.is_empty(),
        "graphs the cpu backend refused:\n{}",
        rejected.join("\n")
    );
    let covered = graphgen::coverage(&graphs);
    assert!(
        covered.len() >= graphgen::OP_KINDS * 9 / 10,
        "only {} of {} op kinds drawn: {covered:?}",
        covered.len(),
        graphgen::OP_KINDS
    );
}

#[test]
fn regressions_still_pass() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions/differential");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the regression folder exists")
        .map(|e| e.expect("readable folder").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable reproducer");
        let g: Graph = serde_json::from_str(&text).expect("a reproducer in the current format");
        match graphgen::check(&g, gpu) {
            Outcome::Pass(_) => {}
            other => panic!("{}: {other:?}\n{}", f.display(), graphgen::describe(&g)),
        }
    }
}

#[test]
fn shrinking_finds_the_op_that_differs() {
    // A stand-in finding: a graph "fails" while it still contains a Sin op.
    // Shrinking must keep that op and drop the rest of the graph.
    let g = (0..500)
        .map(graphgen::generate)
        .find(|g| {
            g.nodes.len() > 8
                && g.nodes.iter().any(|n| {
                    matches!(
                        n,
                        graphgen::Node::Op {
                            op: graphgen::FuzzOp::Unary(graphgen::Unary::Sin),
                            ..
                        }
                    )
                })
        })
        .expect("some graph has a sin");
    let has_sin = |c: &Graph| {
        c.nodes.iter().any(|n| {
            matches!(
                n,
                graphgen::Node::Op {
                    op: graphgen::FuzzOp::Unary(graphgen::Unary::Sin),
                    ..
                }
            )
        })
    };
    let small = graphgen::shrink(&g, has_sin);
    assert!(has_sin(&small));
    assert_eq!(
        small.nodes.len(),
        2,
        "a leaf and the sin:\n{}",
        graphgen::describe(&small)
    );
}
