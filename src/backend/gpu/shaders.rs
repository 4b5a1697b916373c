//! The WGSL sources in `shaders/`, compiled into the binary.

pub const COPY: &str = include_str!("../../../shaders/copy.wgsl");
pub const FILL: &str = include_str!("../../../shaders/fill.wgsl");
pub const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");
pub const GEMM: &str = include_str!("../../../shaders/gemm.wgsl");
pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const POOL2D: &str = include_str!("../../../shaders/pool2d.wgsl");
pub const INDEX: &str = include_str!("../../../shaders/index.wgsl");

/// Every shader file by name (tests validate each with naga).
pub const ALL: &[(&str, &str)] = &[
    ("copy.wgsl", COPY),
    ("fill.wgsl", FILL),
    ("reduce.wgsl", REDUCE),
    ("gemm.wgsl", GEMM),
    ("matmul.wgsl", MATMUL),
    ("pool2d.wgsl", POOL2D),
    ("index.wgsl", INDEX),
];
