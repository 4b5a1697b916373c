// Gather along an axis, and its adjoint scatter-add. The index is dense;
// the source is read where it lies (a broadcast gradient is not copied).
// An index outside its axis sets `flag` (1, then the index) for the host
// to report as an error after the submit; its element reads as zero.
//
// `n` counts index elements; `strides` are those of the gathered-from
// source (gather, from `src_offset`) or of the dense output (scatter_add,
// whose source, of the index's shape, is read through `src_strides`).

const WORKGROUP: u32 = 256u;

struct IndexParams {
    n: u32,
    rank: u32,
    axis: u32,
    axis_size: u32,
    index_shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
    src_strides: array<vec4<u32>, 2>,
    src_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: IndexParams;
@group(0) @binding(1) var<storage, read> index: array<i32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> flag: array<atomic<i32>, 2>;
// f32 bits; atomic because scatter_add accumulates into it.
@group(0) @binding(4) var<storage, read_write> out: array<atomic<u32>>;

fn index_shape(d: u32) -> u32 { return params.index_shape[d >> 2u][d & 3u]; }
fn stride(d: u32) -> u32 { return params.strides[d >> 2u][d & 3u]; }
fn src_stride(d: u32) -> u32 { return params.src_strides[d >> 2u][d & 3u]; }

// Where scatter_add's source element i (row-major over the index's shape) lies.
fn src_at(i: u32) -> u32 {
    var rem = i;
    var off = params.src_offset;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = index_shape(du);
        off += (rem % size) * src_stride(du);
        rem /= size;
    }
    return off;
}

// Offset of index element i's target, or 0xffffffff when its index is out of range.
fn target_offset(i: u32) -> u32 {
    let ix = index[i];
    if (ix < 0 || u32(ix) >= params.axis_size) {
        atomicStore(&flag[1], ix);
        atomicStore(&flag[0], 1);
        return 0xffffffffu;
    }
    var rem = i;
    var off = 0u;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = index_shape(du);
        let coord = select(rem % size, u32(ix), du == params.axis);
        off += coord * stride(du);
        rem /= size;
    }
    return off;
}

@compute @workgroup_size(WORKGROUP)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let off = target_offset(i);
    let at = params.src_offset + select(0u, off, off != 0xffffffffu);
    let v = select(0.0, src[at], off != 0xffffffffu);
    atomicStore(&out[i], bitcast<u32>(v));
}

// Float add by compare-and-swap on the bits: WGSL has no atomic f32 add.
// The order of additions into one element varies, so sums may differ from
// the cpu backend's in the last bits.
@compute @workgroup_size(WORKGROUP)
fn scatter_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let off = target_offset(i);
    if (off == 0xffffffffu) { return; }
    let v = src[src_at(i)];
    var old = atomicLoad(&out[off]);
    loop {
        let r = atomicCompareExchangeWeak(&out[off], old, bitcast<u32>(bitcast<f32>(old) + v));
        if (r.exchanged) { break; }
        old = r.old_value;
    }
}
