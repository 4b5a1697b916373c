// The simpler matmul versions, kept for `shadergrad bench matmul` (the
// engine uses gemm.wgsl's register-blocked kernel). Same bindings and
// parameters as gemm.wgsl MODE 0: M, N, K, n_base, a_off, a_batch, a_row,
// a_col, b_off, b_batch, b_row, b_col, ..., z_base at word 20.
//
// `naive`: one invocation per output, reading A and B from memory.
// `tiled`: 16x16 tiles of A and B staged in workgroup memory.

const T: u32 = 16u;

@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

fn p(i: u32) -> u32 { return params[i >> 2u][i & 3u]; }
fn a_at(z: u32, m: u32, k: u32) -> f32 { return a[p(4u) + z * p(5u) + m * p(6u) + k * p(7u)]; }
fn b_at(z: u32, k: u32, n: u32) -> f32 { return b[p(8u) + z * p(9u) + k * p(10u) + n * p(11u)]; }

@compute @workgroup_size(16, 16)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + p(20u);
    let m = wid.y * T + lid.y;
    let n = (wid.x + p(3u)) * T + lid.x;
    if (m >= p(0u) || n >= p(1u)) { return; }
    var acc = 0.0;
    for (var k = 0u; k < p(2u); k++) {
        acc = fma(a_at(z, m, k), b_at(z, k, n), acc);
    }
    c[(z * p(0u) + m) * p(1u) + n] = acc;
}

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + p(20u);
    let m = wid.y * T + lid.y;
    let n = (wid.x + p(3u)) * T + lid.x;
    let big_k = p(2u);
    var acc = 0.0;
    for (var k0 = 0u; k0 < big_k; k0 += T) {
        var va = 0.0;
        var vb = 0.0;
        if (m < p(0u) && k0 + lid.x < big_k) { va = a_at(z, m, k0 + lid.x); }
        if (n < p(1u) && k0 + lid.y < big_k) { vb = b_at(z, k0 + lid.y, n); }
        tile_a[lid.y * T + lid.x] = va;
        tile_b[lid.y * T + lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc = fma(tile_a[lid.y * T + kk], tile_b[kk * T + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (m < p(0u) && n < p(1u)) { c[(z * p(0u) + m) * p(1u) + n] = acc; }
}
