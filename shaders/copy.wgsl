// Strided views made dense, and zero padding. Elements move as raw 32-bit
// words, so the same kernels serve f32 and i32.
//
// `shape` is the output's; for `copy` the source is read through
// offset/strides, for `pad` the source (of `src_shape`) sits at
// `pad_before` inside the output. Arrays hold 8 axes as two vec4s.

const WORKGROUP: u32 = 256u;

struct CopyParams {
    n: u32,
    rank: u32,
    offset: u32,
    _pad: u32,
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
    pad_before: array<vec4<u32>, 2>,
    src_shape: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn shape(d: u32) -> u32 { return params.shape[d >> 2u][d & 3u]; }
fn stride(d: u32) -> u32 { return params.strides[d >> 2u][d & 3u]; }
fn before(d: u32) -> u32 { return params.pad_before[d >> 2u][d & 3u]; }
fn src_shape(d: u32) -> u32 { return params.src_shape[d >> 2u][d & 3u]; }

@compute @workgroup_size(WORKGROUP)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    var rem = i;
    var off = params.offset;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let size = shape(u32(d));
        off += (rem % size) * stride(u32(d));
        rem /= size;
    }
    dst[i] = src[off];
}

@compute @workgroup_size(WORKGROUP)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    var rem = i;
    var off = params.offset;
    var inside = true;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = shape(du);
        let c = rem % size;
        rem /= size;
        // Unsigned wrap-around makes positions before the interior huge.
        let sc = c - before(du);
        inside = inside && c >= before(du) && sc < src_shape(du);
        off += sc * stride(du);
    }
    dst[i] = select(0u, src[select(0u, off, inside)], inside);
}
