// The simpler matmul versions, kept for `shadergrad bench matmul` (the
// engine uses gemm.wgsl's register-blocked kernel). Same bindings and
// parameters as gemm.wgsl MODE 0 (its GemmParams; only the matmul fields
// are read).
//
// `naive`: one invocation per output, reading A and B from memory.
// `tiled`: 16x16 tiles of A and B staged in workgroup memory.

const T: u32 = 16u;

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    // Column tiles before this dispatch's first (grids beyond 65,535 are split).
    n_base: u32,
    // Batch/group index of this dispatch's first z (likewise).
    z_base: u32,
    // Split-K: `splits` slices of `split_k` reduction steps each.
    splits: u32,
    split_k: u32,
    _pad: u32,
    // MODE 0: element offset and batch/row/column strides of A and B.
    a_off: u32,
    a_batch: u32,
    a_row: u32,
    a_col: u32,
    b_off: u32,
    b_batch: u32,
    b_row: u32,
    b_col: u32,
    // MODE 1-3: NCHW input, OIHW weight, strides, padding, dilation.
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    groups: u32,
}

@group(0) @binding(0) var<uniform> params: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

fn a_at(z: u32, m: u32, k: u32) -> f32 { return a[params.a_off + z * params.a_batch + m * params.a_row + k * params.a_col]; }
fn b_at(z: u32, k: u32, n: u32) -> f32 { return b[params.b_off + z * params.b_batch + k * params.b_row + n * params.b_col]; }

@compute @workgroup_size(16, 16)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + params.z_base;
    let m = wid.y * T + lid.y;
    let n = (wid.x + params.n_base) * T + lid.x;
    if (m >= params.m || n >= params.n) { return; }
    var acc = 0.0;
    for (var k = 0u; k < params.k; k++) {
        acc = fma(a_at(z, m, k), b_at(z, k, n), acc);
    }
    c[(z * params.m + m) * params.n + n] = acc;
}

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + params.z_base;
    let m = wid.y * T + lid.y;
    let n = (wid.x + params.n_base) * T + lid.x;
    let big_k = params.k;
    var acc = 0.0;
    for (var k0 = 0u; k0 < big_k; k0 += T) {
        var va = 0.0;
        var vb = 0.0;
        if (m < params.m && k0 + lid.x < big_k) { va = a_at(z, m, k0 + lid.x); }
        if (n < params.n && k0 + lid.y < big_k) { vb = b_at(z, k0 + lid.y, n); }
        tile_a[lid.y * T + lid.x] = va;
        tile_b[lid.y * T + lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc = fma(tile_a[lid.y * T + kk], tile_b[kk * T + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (m < params.m && n < params.n) { c[(z * params.m + m) * params.n + n] = acc; }
}
