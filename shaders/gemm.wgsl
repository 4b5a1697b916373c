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
// Dispatch: (column tiles, row tiles, batch or group x K-split). `params[3]`
// offsets the column tiles and `params[20]` the z index, so the host can
// split grids beyond the 65,535-workgroup limit. With `params[21]` = S > 1
// splits of `params[22]` k each (split-K, for MODE 3's long reductions
// over few output tiles), split s writes its partial sums to slice s of C,
// which the host then sums.
//
// The convolution readers do no division in the inner loop: the host
// uploads `taps`, one vec4 per k (the reduction index) with its offsets,
// and each invocation decomposes its fixed column once, before the loop.
//
// params, all modes: M, N, K, n_base (in tiles)
//   MODE 0 (matmul, per batch z): a_off, a_batch, a_row, a_col,
//          b_off, b_batch, b_row, b_col
//   MODE 1-3 (convolution, per group z; NCHW input, OIHW weight):
//          batch, C, H, W, O, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, groups
//   z_base at word 20, K splits at 21, k per split at 22.
// MODE 1 forward:          M = O/g,  N = batch*OH*OW, K = C/g*KH*KW
// MODE 2 backward-data:    M = C/g,  N = batch*H*W,   K = O/g*KH*KW
// MODE 3 backward-filter:  M = O/g,  N = C/g*KH*KW,   K = batch*OH*OW

override MODE: u32 = 0u;
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
// Per k: MODE 1 (chan*H*W + ky*dh*W + kx*dw, ky*dh, kx*dw, 0)
//        MODE 2 (weight offset o*cg*KH*KW + ky*KW + kx, dy offset o*OH*OW, ky*dh, kx*dw)
//        MODE 3 (dy offset img*O*OH*OW + oy*OW + ox, x offset img*C*H*W, oy*sh - ph, ox*sw - pw)
@group(0) @binding(4) var<storage, read> taps: array<vec4<i32>>;

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

fn p(i: u32) -> u32 { return params[i >> 2u][i & 3u]; }

// Convolution geometry.
fn ch() -> u32 { return p(5u); }
fn hh() -> i32 { return i32(p(6u)); }
fn ww() -> i32 { return i32(p(7u)); }
fn oc() -> u32 { return p(8u); }
fn oh() -> i32 { return i32(p(9u)); }
fn ow() -> i32 { return i32(p(10u)); }
fn kk() -> u32 { return p(11u) * p(12u); }
fn groups() -> u32 { return p(19u); }
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
            return vec3<i32>(i32(base), oy * i32(p(13u)) - i32(p(15u)), ox * i32(p(14u)) - i32(p(16u)));
        }
        case 2u: {
            let plane = u32(hh() * ww());
            let img = n / plane;
            let s = n % plane;
            let y = i32(s / u32(ww()));
            let x = i32(s % u32(ww()));
            let base = (img * oc() + z * og()) * u32(oh() * ow());
            return vec3<i32>(i32(base), y + i32(p(15u)), x + i32(p(16u)));
        }
        case 3u: {
            let chan = n / kk();
            let t = n % kk();
            let ky = i32(t / p(12u));
            let kx = i32(t % p(12u));
            return vec3<i32>(i32((z * cg() + chan) * u32(hh() * ww())), ky * i32(p(17u)), kx * i32(p(18u)));
        }
        default: { return vec3<i32>(0); }
    }
}

fn x_at(base: i32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= hh() || x >= ww()) { return 0.0; }
    return b[base + y * ww() + x];
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return a[p(4u) + z * p(5u) + m * p(6u) + k * p(7u)]; }
        case 1u: { return a[(z * og() + m) * (cg() * kk()) + k]; }
        case 2u: { return a[u32(taps[k].x) + (z * og() * cg() + m) * kk()]; }
        default: { return a[u32(taps[k].x) + (z * og() + m) * u32(oh() * ow())]; }
    }
}

fn load_b(z: u32, k: u32, n: u32, col: vec3<i32>) -> f32 {
    switch MODE {
        case 0u: { return b[p(8u) + z * p(9u) + k * p(10u) + n * p(11u)]; }
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
            let sh = i32(p(13u));
            let sw = i32(p(14u));
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
    let big_m = p(0u);
    let big_n = p(1u);
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
    return s * p(0u) * p(1u) * groups();
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let big_m = p(0u);
    let big_n = p(1u);
    let zs = wid.z + p(20u);
    let splits = p(21u);
    let z = zs / splits;
    let split = zs % splits;
    let k_begin = split * p(22u);
    let k_end = min(k_begin + p(22u), p(2u));
    let m0 = wid.y * BM;
    let n0 = (wid.x + p(3u)) * BN;
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
