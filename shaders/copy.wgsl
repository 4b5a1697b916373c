// Strided views made dense, and zero padding. Elements move as raw 32-bit
// words, so the same kernels serve f32 and i32.
//
// params (u32 words): n, rank, shape[8], offset, strides[8], pad_before[8], src_shape[8]
// `shape` is the output's; for `copy` the source is read through
// offset/strides, for `pad` the source (of `src_shape`) sits at
// `pad_before` inside the output.

const WORKGROUP: u32 = 256u;
const MAX_RANK: u32 = 8u;
const SHAPE: u32 = 2u;
const OFFSET: u32 = 10u;
const STRIDES: u32 = 11u;
const BEFORE: u32 = 19u;
const SRC_SHAPE: u32 = 27u;

@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn p(i: u32) -> u32 { return params[i >> 2u][i & 3u]; }

@compute @workgroup_size(WORKGROUP)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= p(0u)) { return; }
    var rem = i;
    var off = p(OFFSET);
    for (var d = i32(p(1u)) - 1; d >= 0; d--) {
        let size = p(SHAPE + u32(d));
        off += (rem % size) * p(STRIDES + u32(d));
        rem /= size;
    }
    dst[i] = src[off];
}

@compute @workgroup_size(WORKGROUP)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= p(0u)) { return; }
    var rem = i;
    var off = p(OFFSET);
    var inside = true;
    for (var d = i32(p(1u)) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = p(SHAPE + du);
        let c = rem % size;
        rem /= size;
        // Unsigned wrap-around makes positions before the interior huge.
        let sc = c - p(BEFORE + du);
        inside = inside && c >= p(BEFORE + du) && sc < p(SRC_SHAPE + du);
        off += sc * p(STRIDES + du);
    }
    dst[i] = select(0u, src[select(0u, off, inside)], inside);
}
