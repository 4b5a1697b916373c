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
// split grids beyond the 65,535-workgroup limit. With `splits` = S > 1
// slices of `split_k` k each (split-K, for MODE 3's long reductions
// over few output tiles), split s writes its partial sums to slice s of C,
// which the host then sums.
//
// The convolution readers do no division in the inner loop: the host
// uploads `taps`, one vec4 per k (the reduction index) with its offsets,
// and each invocation decomposes its fixed column once, before the loop.
//
// Two simpler versions stay for `shadergrad bench matmul` to compare with
// (they read only the matmul fields and bind no `taps`): `naive`, one
// invocation per output straight from memory; `tiled`, 16x16 tiles of A
// and B staged in workgroup memory.
//
// MODE 1 forward:          M = O/g,  N = batch*OH*OW, K = C/g*KH*KW
// MODE 2 backward-data:    M = C/g,  N = batch*H*W,   K = O/g*KH*KW
// MODE 3 backward-filter:  M = O/g,  N = C/g*KH*KW,   K = batch*OH*OW

override MODE: u32 = 0u;
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
    _pad: u32,
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

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return a_at(z, m, k); }
        case 1u: { return a[(z * og() + m) * (cg() * kk()) + k]; }
        case 2u: { return a[u32(taps[k].x) + (z * og() * cg() + m) * kk()]; }
        default: { return a[u32(taps[k].x) + (z * og() + m) * u32(oh() * ow())]; }
    }
}

fn load_b(z: u32, k: u32, n: u32, col: vec3<i32>) -> f32 {
    switch MODE {
        case 0u: { return b_at(z, k, n); }
        case 1u: {
            let t = taps[k];
            // The offset t.x folds in channel and tap; bounds need the row/column alone.
            let y = col.y + t.y;
            let x = col.z + t.z;
            if (y < 0 || x < 0 || y >= hh() || x >= ww()) { return 0.0; }
            return b[col.x + t.x + col.y * ww() + col.z];
        }
        case 2u: {
            // dy at the output position tap (ky, kx) maps onto input pixel n.
            let t = taps[k];
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
            let t = taps[k];
            return x_at(t.y + col.x, t.z + col.y, t.w + col.z);
        }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32, slice: u32) {
    let big_m = params.m;
    let big_n = params.n;
    switch MODE {
        case 0u: { c[(z * big_m + m) * big_n + n] = v; }
        case 1u: {
            let plane = u32(oh() * ow());
            let img = n / plane;
            c[(img * oc() + z * og() + m) * plane + n % plane] = v;
        }
        case 2u: {
            let plane = u32(hh() * ww());
            let img = n / plane;
            c[(img * ch() + z * cg() + m) * plane + n % plane] = v;
        }
        default: { c[slice + (z * og() + m) * big_n + n] = v; }
    }
}

// Slice of C that split `s` writes (0 without split-K).
fn slice_offset(s: u32) -> u32 {
    return s * params.m * params.n * groups();
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let big_m = params.m;
    let big_n = params.n;
    let zs = wid.z + params.z_base;
    let splits = params.splits;
    let z = zs / splits;
    let split = zs % splits;
    let k_begin = split * params.split_k;
    let k_end = min(k_begin + params.split_k, params.k);
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
