// Leaves computed on the device: counter-based uniform random numbers and
// arange, in f32 and i32.
//
// rand: a, b are the keys k1, k2 derived from the 64-bit seed on the host,
// exactly as the cpu backend does, so both give the same bits.
// arange: a, b are start and step (f32 or i32 bits).

const WORKGROUP: u32 = 256u;

struct FillParams {
    n: u32,
    a: u32,
    b: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: FillParams;
// Raw words: one binding serves both element types.
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

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
    if (i >= params.n) { return; }
    let h = hash32(hash32(i + params.a) ^ params.b);
    out[i] = bitcast<u32>(f32(h >> 8u) * (1.0 / 16777216.0));
}

@compute @workgroup_size(WORKGROUP)
fn arange_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    out[i] = bitcast<u32>(bitcast<f32>(params.a) + f32(i) * bitcast<f32>(params.b));
}

@compute @workgroup_size(WORKGROUP)
fn arange_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    out[i] = bitcast<u32>(bitcast<i32>(params.a) + i32(i) * bitcast<i32>(params.b));
}
