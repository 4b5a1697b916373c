// Leaves computed on the device: counter-based uniform random numbers and
// arange, in f32 and i32.
//
// rand params: n, k1, k2 (k1, k2 derived from the 64-bit seed on the host,
// exactly as the cpu backend does, so both give the same bits).
// arange params: n, start, step (f32 or i32 bits).

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 32>;
// Raw words: one binding serves both element types.
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn p(i: u32) -> u32 { return params[i >> 2u][i & 3u]; }

// Wellons' lowbias32, as `hash32` in the cpu backend.
fn hash32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

@compute @workgroup_size(WORKGROUP)
fn rand(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= p(0u)) { return; }
    let h = hash32(hash32(i + p(1u)) ^ p(2u));
    out[i] = bitcast<u32>(f32(h >> 8u) * (1.0 / 16777216.0));
}

@compute @workgroup_size(WORKGROUP)
fn arange_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= p(0u)) { return; }
    out[i] = bitcast<u32>(bitcast<f32>(p(1u)) + f32(i) * bitcast<f32>(p(2u)));
}

@compute @workgroup_size(WORKGROUP)
fn arange_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= p(0u)) { return; }
    out[i] = bitcast<u32>(bitcast<i32>(p(1u)) + i32(i) * bitcast<i32>(p(2u)));
}
