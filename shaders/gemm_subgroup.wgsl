// The subgroup GEMM: gemm.wgsl's product with A shared through subgroup
// broadcasts instead of workgroup memory. This file extends gemm.wgsl: it
// is compiled appended to it (the parameters, bindings and the four
// operand readers are gemm.wgsl's), and only on devices with subgroups,
// since a module that calls a subgroup builtin needs them as a whole.
//
// Every invocation of a workgroup computes the same SG_ROWS rows of C, each
// its own 4 adjacent columns (a workgroup: SG_ROWS x 256). Per 8-deep chunk of K,
// lane l of every subgroup loads A at k0 + l % 8 for all SG_ROWS rows, and
// each of the 8 steps takes that chunk's A from lane j by
// `subgroupBroadcast` (a constant lane: a register read on AMD and Intel,
// one shuffle on NVIDIA) and B from memory, 4 columns per invocation. No
// workgroup memory, no barrier. Because every invocation holds the same
// rows, how the device groups invocations into subgroups does not matter;
// the host uses it only where subgroups have at least 8 invocations
// (`AdapterInfo::subgroup_min_size`) and the workgroup's 64 is a multiple
// of the subgroup size.
//
// Split-K and EPILOGUE as gemm.wgsl's full kernels.

const SG_ROWS: u32 = 16u;
const SG_COLS: u32 = 256u;
const SG_CHUNK: u32 = 8u;

// The A values of one k for rows 0..15, as four vec4.
struct RowsOfA {
    q0: vec4<f32>,
    q1: vec4<f32>,
    q2: vec4<f32>,
    q3: vec4<f32>,
}

// A at (rows m0.., k), zeros beyond the slice; rows past M repeat the last
// row (their outputs are never stored).
fn rows_of_a(z: u32, m0: u32, k: u32, k_end: u32) -> RowsOfA {
    var v: array<f32, 16>;
    let t = tap(min(k, k_end - 1u));
    for (var r = 0u; r < SG_ROWS; r++) {
        v[r] = select(0.0, load_a_at(z, min(m0 + r, params.m - 1u), k, t), k < k_end);
    }
    return RowsOfA(
        vec4<f32>(v[0], v[1], v[2], v[3]),
        vec4<f32>(v[4], v[5], v[6], v[7]),
        vec4<f32>(v[8], v[9], v[10], v[11]),
        vec4<f32>(v[12], v[13], v[14], v[15]),
    );
}

// B at (k, this invocation's 4 columns), zeros beyond the slice; columns
// past N repeat the last column.
fn cols_of_b(z: u32, k: u32, k_end: u32, n: array<u32, 4>, col: array<vec3<i32>, 4>) -> vec4<f32> {
    if (k >= k_end) { return vec4<f32>(0.0); }
    let t = tap(k);
    return vec4<f32>(load_b_at(z, k, n[0], col[0], t), load_b_at(z, k, n[1], col[1], t), load_b_at(z, k, n[2], col[2], t), load_b_at(z, k, n[3], col[3], t));
}

// acc[r] += a[r] * b: one k of the 16 x 4 block.
fn rank1(acc: ptr<function, array<vec4<f32>, 16>>, a: RowsOfA, b: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        (*acc)[r] = fma(vec4<f32>(a.q0[r]), b, (*acc)[r]);
        (*acc)[4u + r] = fma(vec4<f32>(a.q1[r]), b, (*acc)[4u + r]);
        (*acc)[8u + r] = fma(vec4<f32>(a.q2[r]), b, (*acc)[8u + r]);
        (*acc)[12u + r] = fma(vec4<f32>(a.q3[r]), b, (*acc)[12u + r]);
    }
}

// Lane `j`'s A (a constant lane: subgroupBroadcast takes only constants).
fn from_lane_0(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 0u), subgroupBroadcast(a.q1, 0u), subgroupBroadcast(a.q2, 0u), subgroupBroadcast(a.q3, 0u)); }
fn from_lane_1(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 1u), subgroupBroadcast(a.q1, 1u), subgroupBroadcast(a.q2, 1u), subgroupBroadcast(a.q3, 1u)); }
fn from_lane_2(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 2u), subgroupBroadcast(a.q1, 2u), subgroupBroadcast(a.q2, 2u), subgroupBroadcast(a.q3, 2u)); }
fn from_lane_3(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 3u), subgroupBroadcast(a.q1, 3u), subgroupBroadcast(a.q2, 3u), subgroupBroadcast(a.q3, 3u)); }
fn from_lane_4(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 4u), subgroupBroadcast(a.q1, 4u), subgroupBroadcast(a.q2, 4u), subgroupBroadcast(a.q3, 4u)); }
fn from_lane_5(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 5u), subgroupBroadcast(a.q1, 5u), subgroupBroadcast(a.q2, 5u), subgroupBroadcast(a.q3, 5u)); }
fn from_lane_6(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 6u), subgroupBroadcast(a.q1, 6u), subgroupBroadcast(a.q2, 6u), subgroupBroadcast(a.q3, 6u)); }
fn from_lane_7(a: RowsOfA) -> RowsOfA { return RowsOfA(subgroupBroadcast(a.q0, 7u), subgroupBroadcast(a.q1, 7u), subgroupBroadcast(a.q2, 7u), subgroupBroadcast(a.q3, 7u)); }

@compute @workgroup_size(64)
fn subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let sp = span(wid.z);
    let z = sp.z;
    let k_end = sp.k_end;
    let m0 = wid.y * SG_ROWS;
    // Columns n0..n0 + 3, adjacent (on llvmpipe 1.7x the speed of
    // columns 64 apart).
    let n0 = (wid.x + params.n_base) * SG_COLS + 4u * tid;
    var n: array<u32, 4>;
    var col: array<vec3<i32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        n[j] = min(n0 + j, params.n - 1u);
        col[j] = column(z, n[j]);
    }
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = sp.k_begin; k0 < k_end; k0 += SG_CHUNK) {
        let a = rows_of_a(z, m0, k0 + lane % SG_CHUNK, k_end);
        rank1(&acc, from_lane_0(a), cols_of_b(z, k0, k_end, n, col));
        rank1(&acc, from_lane_1(a), cols_of_b(z, k0 + 1u, k_end, n, col));
        rank1(&acc, from_lane_2(a), cols_of_b(z, k0 + 2u, k_end, n, col));
        rank1(&acc, from_lane_3(a), cols_of_b(z, k0 + 3u, k_end, n, col));
        rank1(&acc, from_lane_4(a), cols_of_b(z, k0 + 4u, k_end, n, col));
        rank1(&acc, from_lane_5(a), cols_of_b(z, k0 + 5u, k_end, n, col));
        rank1(&acc, from_lane_6(a), cols_of_b(z, k0 + 6u, k_end, n, col));
        rank1(&acc, from_lane_7(a), cols_of_b(z, k0 + 7u, k_end, n, col));
    }
    let slice = slice_offset(sp.split);
    for (var r = 0u; r < SG_ROWS; r++) {
        let m = m0 + r;
        if (m >= params.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < params.n) { store_c(z, m, n0 + j, acc[r][j], slice); }
        }
    }
}
