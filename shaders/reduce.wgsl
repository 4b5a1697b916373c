// Sum or max over the trailing (reduced) axes of a strided view: the host
// permutes the reduced axes last, so each output reduces one "row".
//
// `row` is the reduced length per output; shapes and strides hold up to
// 8 axes as two vec4s.
// Elements are read as raw words; INT_INPUT selects i32 data (reduced in
// f32 and stored back as i32, as the cpu backend does).
//
// `rows`: one invocation per output, for short rows or many outputs.
// `tree`: one workgroup per output, a strided partial per invocation and a
// tree in workgroup memory, for long rows.

override OP: u32 = 0u;          // 0 sum, 1 max
override INT_INPUT: bool = false;
const WORKGROUP: u32 = 256u;

struct ReduceParams {
    n_out: u32,
    row: u32,
    kept_rank: u32,
    red_rank: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    kept_shape: array<vec4<u32>, 2>,
    kept_strides: array<vec4<u32>, 2>,
    red_shape: array<vec4<u32>, 2>,
    red_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> params: ReduceParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

var<private> NAN_BITS: u32 = 0x7fc00000u;
var<private> NEG_INF_BITS: u32 = 0xff800000u;
var<workgroup> partial: array<f32, WORKGROUP>;

fn kept_shape(d: u32) -> u32 { return params.kept_shape[d >> 2u][d & 3u]; }
fn kept_stride(d: u32) -> u32 { return params.kept_strides[d >> 2u][d & 3u]; }
fn red_shape(d: u32) -> u32 { return params.red_shape[d >> 2u][d & 3u]; }
fn red_stride(d: u32) -> u32 { return params.red_strides[d >> 2u][d & 3u]; }
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }

fn identity() -> f32 {
    if (OP == 0u) { return 0.0; }
    return bitcast<f32>(NEG_INF_BITS);
}

// Max propagates NaN, as the cpu backend does.
fn combine(a: f32, b: f32) -> f32 {
    if (OP == 0u) { return a + b; }
    if (is_nan(a) || is_nan(b)) { return bitcast<f32>(NAN_BITS); }
    return max(a, b);
}

fn load(off: u32) -> f32 {
    if (INT_INPUT) { return f32(bitcast<i32>(src[off])); }
    return bitcast<f32>(src[off]);
}

fn store(i: u32, v: f32) {
    if (INT_INPUT) { dst[i] = bitcast<u32>(i32(v)); } else { dst[i] = bitcast<u32>(v); }
}

fn row_base(out_index: u32) -> u32 {
    var rem = out_index;
    var off = params.offset;
    for (var d = i32(params.kept_rank) - 1; d >= 0; d--) {
        let size = kept_shape(u32(d));
        off += (rem % size) * kept_stride(u32(d));
        rem /= size;
    }
    return off;
}

fn element(base: u32, r: u32) -> f32 {
    var rem = r;
    var off = base;
    for (var d = i32(params.red_rank) - 1; d >= 0; d--) {
        let size = red_shape(u32(d));
        off += (rem % size) * red_stride(u32(d));
        rem /= size;
    }
    return load(off);
}

@compute @workgroup_size(WORKGROUP)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n_out) { return; }
    let base = row_base(i);
    var acc = identity();
    for (var r = 0u; r < params.row; r++) {
        acc = combine(acc, element(base, r));
    }
    store(i, acc);
}

@compute @workgroup_size(WORKGROUP)
fn tree(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wid.x + wid.y * groups.x;
    // Uniform per workgroup: every invocation reaches the barriers or none does.
    if (i >= params.n_out) { return; }
    let base = row_base(i);
    var acc = identity();
    for (var r = lid; r < params.row; r += WORKGROUP) {
        acc = combine(acc, element(base, r));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] = combine(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) { store(i, partial[0]); }
}
