// Register-blocked GEMM, C[M, N] = A[M, K] * B[K, N], behind four operand
// readers: batched strided matmul and the three convolutions as implicit
// GEMMs (no im2col buffer). MODE is an override constant, so each pipeline
// compiles only its own readers.
//
// A workgroup computes a 64x64 tile of C from 16-deep slices of A and B in
// workgroup memory (8 KiB); each of its 256 invocations keeps a 4x4 block of
// C in registers, rows ty + 16*i and columns tx + 16*j. Within WebGPU's
// default limits (256 invocations, 16 KiB workgroup memory).
//
// Dispatch: (column tiles, row tiles, batch or group x K-split). `n_base`
// offsets the column tiles and `z_base` the z index, so the host can
// split grids beyond the 65,535-workgroup limit.
//
// The convolution readers do no division in the inner loop: the host
// uploads `taps`, one vec4 per k (the reduction index) with its offsets,
// and each invocation decomposes its fixed column once, before the loop.
//
// `large` is the version for discrete GPUs: 128x128 tiles of C, each
// invocation an 8x8 block as four 4x4 sub-blocks (rows 4*ty.. and
// 64 + 4*ty.., columns likewise), so every workgroup-memory read is a vec4
// and a warp's reads of A are broadcasts. Two stages of 8-deep A and B
// slices (16 KiB, WebGPU's default limit): the next slice is fetched into
// registers while the current one is multiplied, one barrier per slice.
// The A slice is stored transposed with its vec4 index XOR-swizzled by k
// (`swizzle`), so a warp's stores of rows 0..15 at k and k + 4 fall in
// different banks; reads apply the same swizzle and stay vec4.
// Bounds are checked only where tiles are loaded and stored, never in the
// inner loop. It uses the same readers, so every MODE has it.
//
// `small` is `large` for products with few rows (a batch-32 layer's M):
// 32x128 tiles, 4x4 per invocation, a 32-row A slice of one element per
// invocation; the B side is `large`'s.
//
// Split-K (every MODE, all three): with `splits` = S > 1 slices of
// `split_k` reduction steps each, split s writes its partial sums to slice
// s (`slice_len` elements apart) of C, which the host then sums.
//
// Two simpler versions stay for `shadergrad bench matmul` to compare with
// (they read only the matmul fields and bind no `taps`): `naive`, one
// invocation per output straight from memory; `tiled`, 16x16 tiles of A
// and B staged in workgroup memory.
//
// MODE 1 forward:          M = O/g,  N = batch*OH*OW, K = C/g*KH*KW
// MODE 2 backward-data:    M = C/g,  N = batch*H*W,   K = O/g*KH*KW
// MODE 3 backward-filter:  M = O/g,  N = C/g*KH*KW,   K = batch*OH*OW
//
// EPILOGUE (the three full kernels, one split only): 1 adds `bias` per
// channel to each output before it is stored, 2 also applies relu: a
// layer's `relu(x @ w + b)` or `relu(conv(x, w) + b)` in one pass, in the
// f32 operations of the fused elementwise pass it replaces. The channel is
// the column for a matmul (MODE 0), the output channel for a forward
// convolution (MODE 1).

override MODE: u32 = 0u;
override EPILOGUE: u32 = 0u;
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

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
    // Elements of C per split-K slice (its whole size).
    slice_len: u32,
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
// Per k: MODE 1 (chan*H*W + ky*dh*W + kx*dw, ky*dh, kx*dw, 0)
//        MODE 2 (weight offset o*cg*KH*KW + ky*KW + kx, dy offset o*OH*OW, ky*dh, kx*dw)
//        MODE 3 (dy offset img*O*OH*OW + oy*OW + ox, x offset img*C*H*W, oy*sh - ph, ox*sw - pw)
@group(0) @binding(4) var<storage, read> taps: array<vec4<i32>>;
// One value per channel (EPILOGUE > 0; any buffer otherwise).
@group(0) @binding(5) var<storage, read> bias: array<f32>;

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]
// The tiled version's 16x16 tiles.
const T: u32 = 16u;
var<workgroup> small_a: array<f32, 256>;
var<workgroup> small_b: array<f32, 256>;

// Convolution geometry.
fn ch() -> u32 { return params.c; }
fn hh() -> i32 { return i32(params.h); }
fn ww() -> i32 { return i32(params.w); }
fn oc() -> u32 { return params.o; }
fn oh() -> i32 { return i32(params.oh); }
fn ow() -> i32 { return i32(params.ow); }
fn kk() -> u32 { return params.kh * params.kw; }
fn groups() -> u32 { return params.groups; }
fn cg() -> u32 { return ch() / groups(); }
fn og() -> u32 { return oc() / groups(); }

// What an invocation knows about its one column n of B (and of C):
// MODE 0: nothing; MODE 1: (x image offset + group channel offset, oy*sh - ph, ox*sw - pw);
// MODE 2: (dy image offset + group channel offset, y + ph, x + pw);
// MODE 3: (x group+chan offset, ky*dh, kx*dw).
fn column(z: u32, n: u32) -> vec3<i32> {
    switch MODE {
        case 1u: {
            let plane = u32(oh() * ow());
            let img = n / plane;
            let s = n % plane;
            let oy = i32(s / u32(ow()));
            let ox = i32(s % u32(ow()));
            let base = (img * ch() + z * cg()) * u32(hh() * ww());
            return vec3<i32>(i32(base), oy * i32(params.sh) - i32(params.ph), ox * i32(params.sw) - i32(params.pw));
        }
        case 2u: {
            let plane = u32(hh() * ww());
            let img = n / plane;
            let s = n % plane;
            let y = i32(s / u32(ww()));
            let x = i32(s % u32(ww()));
            let base = (img * oc() + z * og()) * u32(oh() * ow());
            return vec3<i32>(i32(base), y + i32(params.ph), x + i32(params.pw));
        }
        case 3u: {
            let chan = n / kk();
            let t = n % kk();
            let ky = i32(t / params.kw);
            let kx = i32(t % params.kw);
            return vec3<i32>(i32((z * cg() + chan) * u32(hh() * ww())), ky * i32(params.dh), kx * i32(params.dw));
        }
        default: { return vec3<i32>(0); }
    }
}

fn x_at(base: i32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= hh() || x >= ww()) { return 0.0; }
    return b[base + y * ww() + x];
}

// Matmul operands, through their strides.
fn a_at(z: u32, m: u32, k: u32) -> f32 { return a[params.a_off + z * params.a_batch + m * params.a_row + k * params.a_col]; }
fn b_at(z: u32, k: u32, n: u32) -> f32 { return b[params.b_off + z * params.b_batch + k * params.b_row + n * params.b_col]; }

// The convolution table's entry for reduction index k (none for a matmul).
fn tap(k: u32) -> vec4<i32> {
    if (MODE == 0u) { return vec4<i32>(0); }
    return taps[k];
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    return load_a_at(z, m, k, tap(k));
}

fn load_b(z: u32, k: u32, n: u32, col: vec3<i32>) -> f32 {
    return load_b_at(z, k, n, col, tap(k));
}

// load_a and load_b given k's table entry `t`: a kernel that reads several
// rows or columns at one k looks it up once.
fn load_a_at(z: u32, m: u32, k: u32, t: vec4<i32>) -> f32 {
    switch MODE {
        case 0u: { return a_at(z, m, k); }
        case 1u: { return a[(z * og() + m) * (cg() * kk()) + k]; }
        case 2u: { return a[u32(t.x) + (z * og() * cg() + m) * kk()]; }
        default: { return a[u32(t.x) + (z * og() + m) * u32(oh() * ow())]; }
    }
}

fn load_b_at(z: u32, k: u32, n: u32, col: vec3<i32>, t: vec4<i32>) -> f32 {
    switch MODE {
        case 0u: { return b_at(z, k, n); }
        case 1u: {
            // The offset t.x folds in channel and tap; bounds need the row/column alone.
            let y = col.y + t.y;
            let x = col.z + t.z;
            if (y < 0 || x < 0 || y >= hh() || x >= ww()) { return 0.0; }
            return b[col.x + t.x + col.y * ww() + col.z];
        }
        case 2u: {
            // dy at the output position tap (ky, kx) maps onto input pixel n.
            var sy = col.y - t.z;
            var sx = col.z - t.w;
            if (sy < 0 || sx < 0) { return 0.0; }
            let sh = i32(params.sh);
            let sw = i32(params.sw);
            if (sh != 1 || sw != 1) {
                if (sy % sh != 0 || sx % sw != 0) { return 0.0; }
                sy /= sh;
                sx /= sw;
            }
            if (sy >= oh() || sx >= ow()) { return 0.0; }
            return b[col.x + t.y + sy * ow() + sx];
        }
        default: {
            return x_at(t.y + col.x, t.z + col.y, t.w + col.z);
        }
    }
}

// An output as stored: with the bias and relu of the EPILOGUE.
fn epilogue(z: u32, m: u32, n: u32, v: f32) -> f32 {
    if (EPILOGUE == 0u) { return v; }
    var channel = n;
    if (MODE == 1u) { channel = z * og() + m; }
    let y = v + bias[channel];
    if (EPILOGUE == 2u) { return select(0.0, y, y > 0.0); }
    return y;
}

fn store_c(z: u32, m: u32, n: u32, acc: f32, slice: u32) {
    let v = epilogue(z, m, n, acc);
    let big_m = params.m;
    let big_n = params.n;
    switch MODE {
        case 0u: { c[slice + (z * big_m + m) * big_n + n] = v; }
        case 1u: {
            let plane = u32(oh() * ow());
            let img = n / plane;
            c[slice + (img * oc() + z * og() + m) * plane + n % plane] = v;
        }
        case 2u: {
            let plane = u32(hh() * ww());
            let img = n / plane;
            c[slice + (img * ch() + z * cg() + m) * plane + n % plane] = v;
        }
        default: { c[slice + (z * og() + m) * big_n + n] = v; }
    }
}

// Slice of C that split `s` writes (0 without split-K).
fn slice_offset(s: u32) -> u32 {
    return s * params.slice_len;
}

// Which product (batch or group) z and which split-K slice [k_begin,
// k_end) a workgroup at grid depth `wz` computes.
struct Span {
    z: u32,
    split: u32,
    k_begin: u32,
    k_end: u32,
}

fn span(wz: u32) -> Span {
    let zs = wz + params.z_base;
    let split = zs % params.splits;
    let k_begin = split * params.split_k;
    return Span(zs / params.splits, split, k_begin, min(k_begin + params.split_k, params.k));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let big_m = params.m;
    let big_n = params.n;
    let sp = span(wid.z);
    let z = sp.z;
    let split = sp.split;
    let k_begin = sp.k_begin;
    let k_end = sp.k_end;
    let m0 = wid.y * BM;
    let n0 = (wid.x + params.n_base) * BN;
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    // This invocation always loads column n0 + tid % BN of B (256 is a multiple of BN).
    let my_n = n0 + tid % BN;
    let col = column(z, min(my_n, big_n - 1u));
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + 256u * r;
            // A slice: consecutive invocations walk k (row-major A reads coalesce).
            let am = idx / BK;
            let ak = idx % BK;
            var va = 0.0;
            if (m0 + am < big_m && k0 + ak < k_end) { va = load_a(z, m0 + am, k0 + ak); }
            tile_a[ak * BM + am] = va;
            // B slice: consecutive invocations walk n.
            let bk = idx / BN;
            let bn = idx % BN;
            var vb = 0.0;
            if (k0 + bk < k_end && n0 + bn < big_n) { vb = load_b(z, k0 + bk, n0 + bn, col); }
            tile_b[bk * BN + bn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var ra: array<f32, 4>;
            var rb: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                ra[i] = tile_a[kk * BM + ty + 16u * i];
                rb[i] = tile_b[kk * BN + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(ra[i], rb[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let m = m0 + ty + 16u * i;
            let n = n0 + tx + 16u * j;
            if (m < big_m && n < big_n) { store_c(z, m, n, acc[i * 4u + j], slice_offset(split)); }
        }
    }
}

// ---- the large-tile version

const LBM: u32 = 128u;
const LBN: u32 = 128u;
const LBK: u32 = 8u;
// [stage][k][m / 4] and [stage][k][n / 4]: 2 * 8 * 32 vec4 each.
var<workgroup> stage_a: array<vec4<f32>, 512>;
var<workgroup> stage_b: array<vec4<f32>, 512>;

// Four consecutive k of row m of A (zeros outside the slice or the matrix).
fn fetch_a(z: u32, m: u32, k: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (m < params.m) {
        for (var i = 0u; i < 4u; i++) {
            if (k + i < k_end) { v[i] = load_a(z, m, k + i); }
        }
    }
    return v;
}

// Four consecutive k of column n of B.
fn fetch_b(z: u32, k: u32, n: u32, k_end: u32, col: vec3<i32>) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (n < params.n) {
        for (var i = 0u; i < 4u; i++) {
            if (k + i < k_end) { v[i] = load_b(z, k + i, n, col); }
        }
    }
    return v;
}

// The vec4 column of row quad q at slice row k of a stage of A: k >= 4
// flips bit 2, which keeps q within its half (0..15 or 16..31).
fn swizzle(q: u32, k: u32) -> u32 {
    return q ^ (k & 4u);
}

// Store four k of one A row and one B column into a stage.
fn stage(base: u32, am: u32, ak: u32, bn: u32, bk: u32, pa: vec4<f32>, pb: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        stage_a[base + (ak + i) * 32u + swizzle(am / 4u, ak + i)][am % 4u] = pa[i];
        stage_b[base + (bk + i) * 32u + bn / 4u][bn % 4u] = pb[i];
    }
}

@compute @workgroup_size(16, 16)
fn large(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let sp = span(wid.z);
    let z = sp.z;
    let split = sp.split;
    let k_begin = sp.k_begin;
    let k_end = sp.k_end;
    let m0 = wid.y * LBM;
    let n0 = (wid.x + params.n_base) * LBN;
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    // Loading roles: row tid / 2 of the A slice, k 4 * (tid % 2)..+4 (a
    // warp reads 16 rows' 32-byte runs); column tid % 128 of the B slice,
    // k 4 * (tid / 128)..+4 (a warp reads 32 consecutive columns).
    let am = tid / 2u;
    let ak = 4u * (tid % 2u);
    let bn = tid % LBN;
    let bk = 4u * (tid / LBN);
    let col = column(z, min(n0 + bn, params.n - 1u));
    var acc: array<vec4<f32>, 16>; // [row 0..8][column quad 0..2]
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    let slices = (max(k_end, k_begin) - k_begin + LBK - 1u) / LBK;
    var pa = fetch_a(z, m0 + am, k_begin + ak, k_end);
    var pb = fetch_b(z, k_begin + bk, n0 + bn, k_end, col);
    stage(0u, am, ak, bn, bk, pa, pb);
    workgroupBarrier();
    for (var t = 0u; t < slices; t++) {
        // Fetch slice t + 1 into registers, multiply slice t, then stage
        // t + 1 in the other half; the barrier ends every read of this half
        // before the next iteration overwrites it.
        let more = t + 1u < slices;
        if (more) {
            let k0 = k_begin + (t + 1u) * LBK;
            pa = fetch_a(z, m0 + am, k0 + ak, k_end);
            pb = fetch_b(z, k0 + bk, n0 + bn, k_end, col);
        }
        let cur = (t % 2u) * 256u;
        for (var kk = 0u; kk < LBK; kk++) {
            let a_lo = stage_a[cur + kk * 32u + swizzle(ty, kk)];
            let a_hi = stage_a[cur + kk * 32u + swizzle(16u + ty, kk)];
            let b_lo = stage_b[cur + kk * 32u + tx];
            let b_hi = stage_b[cur + kk * 32u + 16u + tx];
            for (var r = 0u; r < 4u; r++) {
                acc[2u * r] = fma(vec4<f32>(a_lo[r]), b_lo, acc[2u * r]);
                acc[2u * r + 1u] = fma(vec4<f32>(a_lo[r]), b_hi, acc[2u * r + 1u]);
                acc[2u * r + 8u] = fma(vec4<f32>(a_hi[r]), b_lo, acc[2u * r + 8u]);
                acc[2u * r + 9u] = fma(vec4<f32>(a_hi[r]), b_hi, acc[2u * r + 9u]);
            }
        }
        if (more) { stage(((t + 1u) % 2u) * 256u, am, ak, bn, bk, pa, pb); }
        workgroupBarrier();
    }
    let slice = slice_offset(split);
    for (var r = 0u; r < 8u; r++) {
        let m = m0 + (r / 4u) * 64u + 4u * ty + r % 4u;
        if (m >= params.m) { continue; }
        for (var q = 0u; q < 2u; q++) {
            let v = acc[2u * r + q];
            for (var j = 0u; j < 4u; j++) {
                let n = n0 + q * 64u + 4u * tx + j;
                if (n < params.n) { store_c(z, m, n, v[j], slice); }
            }
        }
    }
}

// ---- the small-M version

const SBM: u32 = 32u;
// [stage][k][m / 4]: 2 * 8 * 8 vec4; B goes to `stage_b` as in `large`.
var<workgroup> thin_a: array<vec4<f32>, 128>;

fn fetch_one_a(z: u32, m: u32, k: u32, k_end: u32) -> f32 {
    if (m < params.m && k < k_end) { return load_a(z, m, k); }
    return 0.0;
}

// The A element goes to row quad am / 4 XOR k: a warp's 32 stores (rows
// 0..3 at k 0..7) land in 32 different banks.
fn stage_small(s: u32, am: u32, ak: u32, bn: u32, bk: u32, pa: f32, pb: vec4<f32>) {
    thin_a[s * 64u + ak * 8u + ((am / 4u) ^ ak)][am % 4u] = pa;
    for (var i = 0u; i < 4u; i++) {
        stage_b[s * 256u + (bk + i) * 32u + bn / 4u][bn % 4u] = pb[i];
    }
}

@compute @workgroup_size(32, 8)
fn small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let sp = span(wid.z);
    let z = sp.z;
    let split = sp.split;
    let k_begin = sp.k_begin;
    let k_end = sp.k_end;
    let m0 = wid.y * SBM;
    let n0 = (wid.x + params.n_base) * LBN;
    // This invocation's outputs: rows 4 * ty.., columns 4 * tx...
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 32u + tx;
    // Loading roles: element (row tid / 8, k tid % 8) of the A slice (a
    // warp reads four rows' 32-byte runs); B as in `large`.
    let am = tid / 8u;
    let ak = tid % 8u;
    let bn = tid % LBN;
    let bk = 4u * (tid / LBN);
    let col = column(z, min(n0 + bn, params.n - 1u));
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    let slices = (max(k_end, k_begin) - k_begin + LBK - 1u) / LBK;
    var pa = fetch_one_a(z, m0 + am, k_begin + ak, k_end);
    var pb = fetch_b(z, k_begin + bk, n0 + bn, k_end, col);
    stage_small(0u, am, ak, bn, bk, pa, pb);
    workgroupBarrier();
    for (var t = 0u; t < slices; t++) {
        let more = t + 1u < slices;
        if (more) {
            let k0 = k_begin + (t + 1u) * LBK;
            pa = fetch_one_a(z, m0 + am, k0 + ak, k_end);
            pb = fetch_b(z, k0 + bk, n0 + bn, k_end, col);
        }
        let ca = (t % 2u) * 64u;
        let cb = (t % 2u) * 256u;
        for (var kk = 0u; kk < LBK; kk++) {
            let a = thin_a[ca + kk * 8u + (ty ^ kk)];
            let b = stage_b[cb + kk * 32u + tx];
            for (var r = 0u; r < 4u; r++) {
                acc[r] = fma(vec4<f32>(a[r]), b, acc[r]);
            }
        }
        if (more) { stage_small((t + 1u) % 2u, am, ak, bn, bk, pa, pb); }
        workgroupBarrier();
    }
    let slice = slice_offset(split);
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + 4u * ty + r;
        if (m >= params.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 4u * tx + j;
            if (n < params.n) { store_c(z, m, n, acc[r][j], slice); }
        }
    }
}

// ---- the simpler versions, for the benchmark


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
        small_a[lid.y * T + lid.x] = va;
        small_b[lid.y * T + lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc = fma(small_a[lid.y * T + kk], small_b[kk * T + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (m < params.m && n < params.n) { c[(z * params.m + m) * params.n + n] = acc; }
}
