// Fused scaled dot-product attention, softmax(q k^T * scale + mask) v, and
// its backward pass (FlashAttention-2's recomputation from the saved
// log-sum-exp). Nothing of size [queries, keys] is ever stored: memory is
// linear in the sequence length.
//
// Layouts: q [b, h, lq, d], k [b, hk, lk, d], v [b, hk, lk, dv], dout like
// the output [b, h, lq, dv]; each read through (offset, batch, head, row)
// strides with unit stride inside a row, so a head split by permute needs
// no copy. Query head h reads key/value head h / group. out, lse, delta
// and the gradients are dense.
//
// A key is visible to query i when (not causal or key <= i) and (no mask or
// mask[b, key] != 0). A query that sees no key gets a zero row, zero
// gradients and lse = -inf (written as bits; nothing computes with it).
//
// forward:  one invocation per query row, 64 rows per workgroup; key/value
//           tiles staged in workgroup memory; online softmax per tile.
// backward_dq:  one invocation per query row: dq = scale * sum_j ds_ij k_j.
// backward_dkv: one invocation per key row of a key/value head, looping over
//           its group's query heads and query tiles: dv = sum_i p_ij dout_i,
//           dk = scale * sum_i ds_ij q_i; dk then dv in one output buffer.
// with p_ij = exp(s_ij - lse_i), ds_ij = p_ij (dout_i . v_j - delta_i).
//
// Rows are handled as vec4s, four at a time (16 floats per loop
// iteration), zero-padded to a multiple of 16 (`d4`, `dv4` count vec4s).
// Besides using the vector units, this keeps llvmpipe (the software GPU)
// correct: it stops any invocation after 65,535 loop iterations in total,
// which a loop per float would reach at about 500 keys of head dim 64.

const WG: u32 = 64u;
// Largest head dim: the per-invocation rows live in private arrays.
const MAX_D4: u32 = 32u;
// Workgroup tile capacity in vec4s; rows per tile = min(64, TILE / d4),
// chosen by the host (`tile`). 2 * 480 vec4s + 2 * 64 floats = 15.5 KiB.
const TILE: u32 = 480u;

const FLAG_CAUSAL: u32 = 1u;
const FLAG_MASK: u32 = 2u;
// Private, not const: a const would be folded into an infinite float literal,
// which WGSL forbids; pool2d.wgsl does the same.
var<private> NEG_INF_BITS: u32 = 0xff800000u;

struct AttentionParams {
    batch: u32,
    heads: u32,
    group: u32,
    lq: u32,
    lk: u32,
    d: u32,
    dv: u32,
    flags: u32,
    scale: f32,
    tile: u32,
    // Where dv starts in `out` (backward_dkv).
    dv_base: u32,
    // Workgroups the dispatch really needs (the grid may be folded).
    groups: u32,
    // vec4s per padded row: a multiple of 4.
    d4: u32,
    dv4: u32,
    _pad0: u32,
    _pad1: u32,
    q_off: u32,
    q_sb: u32,
    q_sh: u32,
    q_sl: u32,
    k_off: u32,
    k_sb: u32,
    k_sh: u32,
    k_sl: u32,
    v_off: u32,
    v_sb: u32,
    v_sh: u32,
    v_sl: u32,
    g_off: u32,
    g_sb: u32,
    g_sh: u32,
    g_sl: u32,
}

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
// [b, lk], nonzero = visible (a one-element stand-in without a mask).
@group(0) @binding(4) var<storage, read> mask: array<f32>;
// [b, h, lq]: written by forward, read by the backward kernels.
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
// [b, h, lq]: rowsum(dout * out).
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read> dout: array<f32>;
// forward: out; backward_dq: dq; backward_dkv: dk then dv.
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

var<workgroup> tile_a: array<vec4<f32>, TILE>;
var<workgroup> tile_b: array<vec4<f32>, TILE>;
var<workgroup> row_a: array<f32, WG>;
var<workgroup> row_b: array<f32, WG>;

fn q_row(b: u32, h: u32, i: u32) -> u32 { return params.q_off + b * params.q_sb + h * params.q_sh + i * params.q_sl; }
fn k_row(b: u32, h: u32, j: u32) -> u32 { return params.k_off + b * params.k_sb + h * params.k_sh + j * params.k_sl; }
fn v_row(b: u32, h: u32, j: u32) -> u32 { return params.v_off + b * params.v_sb + h * params.v_sh + j * params.v_sl; }
fn g_row(b: u32, h: u32, i: u32) -> u32 { return params.g_off + b * params.g_sb + h * params.g_sh + i * params.g_sl; }

// Elements 4c..4c+3 of a row of `len` floats starting at `base`, zero past its end.
fn q4(base: u32, c: u32, len: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, q[base + e], e < len),
        select(0.0, q[base + e + 1u], e + 1u < len),
        select(0.0, q[base + e + 2u], e + 2u < len),
        select(0.0, q[base + e + 3u], e + 3u < len));
}
fn k4(base: u32, c: u32, len: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, k[base + e], e < len),
        select(0.0, k[base + e + 1u], e + 1u < len),
        select(0.0, k[base + e + 2u], e + 2u < len),
        select(0.0, k[base + e + 3u], e + 3u < len));
}
fn v4(base: u32, c: u32, len: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, v[base + e], e < len),
        select(0.0, v[base + e + 1u], e + 1u < len),
        select(0.0, v[base + e + 2u], e + 2u < len),
        select(0.0, v[base + e + 3u], e + 3u < len));
}
fn g4(base: u32, c: u32, len: u32) -> vec4<f32> {
    let e = 4u * c;
    return vec4<f32>(
        select(0.0, dout[base + e], e < len),
        select(0.0, dout[base + e + 1u], e + 1u < len),
        select(0.0, dout[base + e + 2u], e + 2u < len),
        select(0.0, dout[base + e + 3u], e + 3u < len));
}

// Write elements 4c.. of `x` to out[base..base + len].
fn put4(base: u32, c: u32, len: u32, x: vec4<f32>) {
    let e = 4u * c;
    for (var t = 0u; t < 4u; t++) {
        if (e + t < len) { out[base + e + t] = x[t]; }
    }
}

fn causal() -> bool { return (params.flags & FLAG_CAUSAL) != 0u; }

// `&&` short-circuits, so the stand-in mask is never indexed.
fn key_kept(b: u32, j: u32) -> bool {
    return (params.flags & FLAG_MASK) == 0u || mask[b * params.lk + j] != 0.0;
}

fn visible(b: u32, i: u32, j: u32) -> bool {
    return (!causal() || j <= i) && key_kept(b, j);
}

fn is_dead(l: f32) -> bool { return bitcast<u32>(l) == NEG_INF_BITS; }

// Keys any query of the tile starting at q0 can see.
fn key_end(q0: u32) -> u32 {
    return select(params.lk, min(params.lk, q0 + WG), causal());
}

// Workgroup index over a grid that may be folded into two dimensions.
fn group_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

// Stage rows t0..t0+n of keys (tile_a) and values (tile_b) of head (b, kvh).
fn stage_keys(b: u32, kvh: u32, t0: u32, n: u32, lane: u32) {
    for (var e = lane; e < n * params.d4; e += WG) {
        tile_a[e] = k4(k_row(b, kvh, t0 + e / params.d4), e % params.d4, params.d);
    }
    for (var e = lane; e < n * params.dv4; e += WG) {
        tile_b[e] = v4(v_row(b, kvh, t0 + e / params.dv4), e % params.dv4, params.dv);
    }
}

@compute @workgroup_size(WG)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let gi = group_index(wid, groups);
    if (gi >= params.groups) { return; }
    let q_tiles = (params.lq + WG - 1u) / WG;
    let bh = gi / q_tiles;
    let b = bh / params.heads;
    let h = bh % params.heads;
    let kvh = h / params.group;
    let q0 = (gi % q_tiles) * WG;
    let i = q0 + lid.x;
    let in_range = i < params.lq;
    let d4 = params.d4;
    let dv4 = params.dv4;

    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if (in_range) {
        let base = q_row(b, h, i);
        for (var c = 0u; c < d4; c++) { qv[c] = q4(base, c, params.d) * params.scale; }
    }
    var m = 0.0;
    var l = 0.0;
    var seen = false;
    let end = key_end(q0);
    for (var t0 = 0u; t0 < end; t0 += params.tile) {
        let n = min(params.tile, end - t0);
        workgroupBarrier();
        stage_keys(b, kvh, t0, n, lid.x);
        workgroupBarrier();
        // No `continue` around the barriers: their control flow must stay uniform.
        if (in_range) {
            var s: array<f32, WG>;
            var tile_max = 0.0;
            var found = false;
            for (var j = 0u; j < n; j++) {
                if (!visible(b, i, t0 + j)) { continue; }
                let kb = j * d4;
                var dot4 = vec4<f32>();
                for (var c = 0u; c < d4; c += 4u) {
                    dot4 += qv[c] * tile_a[kb + c] + qv[c + 1u] * tile_a[kb + c + 1u]
                        + qv[c + 2u] * tile_a[kb + c + 2u] + qv[c + 3u] * tile_a[kb + c + 3u];
                }
                let dot = dot4.x + dot4.y + dot4.z + dot4.w;
                s[j] = dot;
                tile_max = select(dot, max(tile_max, dot), found);
                found = true;
            }
            if (found) {
                let m_new = select(tile_max, max(m, tile_max), seen);
                if (seen) {
                    let correction = exp(m - m_new);
                    l *= correction;
                    for (var c = 0u; c < dv4; c += 4u) {
                        acc[c] *= correction;
                        acc[c + 1u] *= correction;
                        acc[c + 2u] *= correction;
                        acc[c + 3u] *= correction;
                    }
                }
                for (var j = 0u; j < n; j++) {
                    if (!visible(b, i, t0 + j)) { continue; }
                    let p = exp(s[j] - m_new);
                    l += p;
                    let vb = j * dv4;
                    for (var c = 0u; c < dv4; c += 4u) {
                        acc[c] += p * tile_b[vb + c];
                        acc[c + 1u] += p * tile_b[vb + c + 1u];
                        acc[c + 2u] += p * tile_b[vb + c + 2u];
                        acc[c + 3u] += p * tile_b[vb + c + 3u];
                    }
                }
                m = m_new;
                seen = true;
            }
        }
    }
    if (!in_range) { return; }
    let row = bh * params.lq + i;
    let inv = select(0.0, 1.0 / l, seen);
    for (var c = 0u; c < dv4; c++) { put4(row * params.dv, c, params.dv, acc[c] * inv); }
    lse[row] = select(bitcast<f32>(NEG_INF_BITS), m + log(l), seen);
}

@compute @workgroup_size(WG)
fn backward_dq(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let gi = group_index(wid, groups);
    if (gi >= params.groups) { return; }
    let q_tiles = (params.lq + WG - 1u) / WG;
    let bh = gi / q_tiles;
    let b = bh / params.heads;
    let h = bh % params.heads;
    let kvh = h / params.group;
    let q0 = (gi % q_tiles) * WG;
    let i = q0 + lid.x;
    let row = bh * params.lq + i;
    let d4 = params.d4;
    let dv4 = params.dv4;
    var live = i < params.lq;
    var qv: array<vec4<f32>, MAX_D4>;
    var gv: array<vec4<f32>, MAX_D4>;
    var dq: array<vec4<f32>, MAX_D4>;
    var row_lse = 0.0;
    var row_delta = 0.0;
    if (live) {
        row_lse = lse[row];
        row_delta = delta[row];
        live = !is_dead(row_lse);
    }
    if (live) {
        let qb = q_row(b, h, i);
        for (var c = 0u; c < d4; c++) { qv[c] = q4(qb, c, params.d); }
        let gb = g_row(b, h, i);
        for (var c = 0u; c < dv4; c++) { gv[c] = g4(gb, c, params.dv); }
    }
    let end = key_end(q0);
    for (var t0 = 0u; t0 < end; t0 += params.tile) {
        let n = min(params.tile, end - t0);
        workgroupBarrier();
        stage_keys(b, kvh, t0, n, lid.x);
        workgroupBarrier();
        if (live) {
            for (var j = 0u; j < n; j++) {
                if (!visible(b, i, t0 + j)) { continue; }
                let kb = j * d4;
                let vb = j * dv4;
                var dot4 = vec4<f32>();
                for (var c = 0u; c < d4; c += 4u) {
                    dot4 += qv[c] * tile_a[kb + c] + qv[c + 1u] * tile_a[kb + c + 1u]
                        + qv[c + 2u] * tile_a[kb + c + 2u] + qv[c + 3u] * tile_a[kb + c + 3u];
                }
                let p = exp((dot4.x + dot4.y + dot4.z + dot4.w) * params.scale - row_lse);
                var dp4 = vec4<f32>();
                for (var c = 0u; c < dv4; c += 4u) {
                    dp4 += gv[c] * tile_b[vb + c] + gv[c + 1u] * tile_b[vb + c + 1u]
                        + gv[c + 2u] * tile_b[vb + c + 2u] + gv[c + 3u] * tile_b[vb + c + 3u];
                }
                let ds = p * (dp4.x + dp4.y + dp4.z + dp4.w - row_delta);
                for (var c = 0u; c < d4; c += 4u) {
                    dq[c] += ds * tile_a[kb + c];
                    dq[c + 1u] += ds * tile_a[kb + c + 1u];
                    dq[c + 2u] += ds * tile_a[kb + c + 2u];
                    dq[c + 3u] += ds * tile_a[kb + c + 3u];
                }
            }
        }
    }
    if (i >= params.lq) { return; }
    for (var c = 0u; c < d4; c++) { put4(row * params.d, c, params.d, dq[c] * params.scale); }
}

@compute @workgroup_size(WG)
fn backward_dkv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let gi = group_index(wid, groups);
    if (gi >= params.groups) { return; }
    let k_tiles = (params.lk + WG - 1u) / WG;
    let kv_heads = params.heads / params.group;
    let bkv = gi / k_tiles;
    let b = bkv / kv_heads;
    let kvh = bkv % kv_heads;
    let k0 = (gi % k_tiles) * WG;
    let j = k0 + lid.x;
    let d4 = params.d4;
    let dv4 = params.dv4;
    let live = j < params.lk && key_kept(b, j);
    var kv: array<vec4<f32>, MAX_D4>;
    var vv: array<vec4<f32>, MAX_D4>;
    var dk: array<vec4<f32>, MAX_D4>;
    var dv: array<vec4<f32>, MAX_D4>;
    if (live) {
        let kb = k_row(b, kvh, j);
        for (var c = 0u; c < d4; c++) { kv[c] = k4(kb, c, params.d); }
        let vb = v_row(b, kvh, j);
        for (var c = 0u; c < dv4; c++) { vv[c] = v4(vb, c, params.dv); }
    }
    // Under a causal mask no query before the tile's first key sees it.
    let start = select(0u, k0, causal());
    for (var hg = 0u; hg < params.group; hg++) {
        let h = kvh * params.group + hg;
        let row0 = (b * params.heads + h) * params.lq;
        for (var t0 = start; t0 < params.lq; t0 += params.tile) {
            let n = min(params.tile, params.lq - t0);
            workgroupBarrier();
            for (var e = lid.x; e < n * d4; e += WG) {
                tile_a[e] = q4(q_row(b, h, t0 + e / d4), e % d4, params.d);
            }
            for (var e = lid.x; e < n * dv4; e += WG) {
                tile_b[e] = g4(g_row(b, h, t0 + e / dv4), e % dv4, params.dv);
            }
            if (lid.x < n) {
                row_a[lid.x] = lse[row0 + t0 + lid.x];
                row_b[lid.x] = delta[row0 + t0 + lid.x];
            }
            workgroupBarrier();
            if (live) {
                for (var r = 0u; r < n; r++) {
                    if ((causal() && j > t0 + r) || is_dead(row_a[r])) { continue; }
                    let qb = r * d4;
                    let gb = r * dv4;
                    var dot4 = vec4<f32>();
                    for (var c = 0u; c < d4; c += 4u) {
                        dot4 += kv[c] * tile_a[qb + c] + kv[c + 1u] * tile_a[qb + c + 1u]
                            + kv[c + 2u] * tile_a[qb + c + 2u] + kv[c + 3u] * tile_a[qb + c + 3u];
                    }
                    let p = exp((dot4.x + dot4.y + dot4.z + dot4.w) * params.scale - row_a[r]);
                    var dp4 = vec4<f32>();
                    for (var c = 0u; c < dv4; c += 4u) {
                        let g0 = tile_b[gb + c];
                        let g1 = tile_b[gb + c + 1u];
                        let g2 = tile_b[gb + c + 2u];
                        let g3 = tile_b[gb + c + 3u];
                        dv[c] += p * g0;
                        dv[c + 1u] += p * g1;
                        dv[c + 2u] += p * g2;
                        dv[c + 3u] += p * g3;
                        dp4 += g0 * vv[c] + g1 * vv[c + 1u] + g2 * vv[c + 2u] + g3 * vv[c + 3u];
                    }
                    let ds = p * (dp4.x + dp4.y + dp4.z + dp4.w - row_b[r]);
                    for (var c = 0u; c < d4; c += 4u) {
                        dk[c] += ds * tile_a[qb + c];
                        dk[c + 1u] += ds * tile_a[qb + c + 1u];
                        dk[c + 2u] += ds * tile_a[qb + c + 2u];
                        dk[c + 3u] += ds * tile_a[qb + c + 3u];
                    }
                }
            }
        }
    }
    if (j >= params.lk) { return; }
    let row = bkv * params.lk + j;
    for (var c = 0u; c < d4; c++) { put4(row * params.d, c, params.d, dk[c] * params.scale); }
    for (var c = 0u; c < dv4; c++) { put4(params.dv_base + row * params.dv, c, params.dv, dv[c]); }
}
