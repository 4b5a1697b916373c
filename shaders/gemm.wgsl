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
// Dispatch: (column tiles, row tiles, batch or group). `params[3]` offsets
// the column tiles and `params[20]` the z index, so the host can split
// grids beyond the 65,535-workgroup limit.
//
// params, all modes: M, N, K, n_base (in tiles)
//   MODE 0 (matmul, per batch z): a_off, a_batch, a_row, a_col,
//          b_off, b_batch, b_row, b_col
//   MODE 1-3 (convolution, per group z; NCHW input, OIHW weight):
//          batch, C, H, W, O, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, groups
//   z_base at word 20.
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

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

fn p(i: u32) -> u32 { return params[i >> 2u][i & 3u]; }

// Convolution geometry.
fn n_img() -> u32 { return p(4u); }
fn ch() -> u32 { return p(5u); }
fn hh() -> u32 { return p(6u); }
fn ww() -> u32 { return p(7u); }
fn oc() -> u32 { return p(8u); }
fn oh() -> u32 { return p(9u); }
fn ow() -> u32 { return p(10u); }
fn kh() -> u32 { return p(11u); }
fn kw() -> u32 { return p(12u); }
fn groups() -> u32 { return p(19u); }
fn cg() -> u32 { return ch() / groups(); }
fn og() -> u32 { return oc() / groups(); }

// Input pixel (img, channel, y, x) where output (oy, ox) meets tap (ky, kx);
// zero in the padding.
fn input_at(img: u32, chan: u32, oy: u32, ox: u32, ky: u32, kx: u32) -> f32 {
    let y = i32(oy * p(13u) + ky * p(17u)) - i32(p(15u));
    let x = i32(ox * p(14u) + kx * p(18u)) - i32(p(16u));
    if (y < 0 || x < 0 || y >= i32(hh()) || x >= i32(ww())) { return 0.0; }
    return b[((img * ch() + chan) * hh() + u32(y)) * ww() + u32(x)];
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return a[p(4u) + z * p(5u) + m * p(6u) + k * p(7u)]; }
        case 1u: { return a[(z * og() + m) * (cg() * kh() * kw()) + k]; }
        case 2u: {
            // weight[g*og + o, c, ky, kx] with k = (o, ky, kx), m = c
            let taps = kh() * kw();
            let o = k / taps;
            let t = k % taps;
            return a[((z * og() + o) * cg() + m) * taps + t];
        }
        default: {
            // dy[img, g*og + m, oy, ox] with k = (img, oy, ox)
            let plane = oh() * ow();
            let img = k / plane;
            let s = k % plane;
            return a[(img * oc() + z * og() + m) * plane + s];
        }
    }
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    switch MODE {
        case 0u: { return b[p(8u) + z * p(9u) + k * p(10u) + n * p(11u)]; }
        case 1u: {
            let taps = kh() * kw();
            let chan = k / taps;
            let ky = (k % taps) / kw();
            let kx = k % kw();
            let plane = oh() * ow();
            let img = n / plane;
            let oy = (n % plane) / ow();
            let ox = n % ow();
            return input_at(img, z * cg() + chan, oy, ox, ky, kx);
        }
        case 2u: {
            // dy at the output position that tap (ky, kx) maps onto input pixel n.
            let taps = kh() * kw();
            let o = k / taps;
            let ky = (k % taps) / kw();
            let kx = k % kw();
            let plane = hh() * ww();
            let img = n / plane;
            let y = (n % plane) / ww();
            let x = n % ww();
            let ty = i32(y + p(15u)) - i32(ky * p(17u));
            let tx = i32(x + p(16u)) - i32(kx * p(18u));
            if (ty < 0 || tx < 0) { return 0.0; }
            let sy = u32(ty);
            let sx = u32(tx);
            if (sy % p(13u) != 0u || sx % p(14u) != 0u) { return 0.0; }
            let oy = sy / p(13u);
            let ox = sx / p(14u);
            if (oy >= oh() || ox >= ow()) { return 0.0; }
            return b[((img * oc() + z * og() + o) * oh() + oy) * ow() + ox];
        }
        default: {
            // x at the input pixel tap n = (c, ky, kx) reads for output k = (img, oy, ox)
            let plane = oh() * ow();
            let img = k / plane;
            let oy = (k % plane) / ow();
            let ox = k % ow();
            let taps = kh() * kw();
            let chan = n / taps;
            let ky = (n % taps) / kw();
            let kx = n % kw();
            return input_at(img, z * cg() + chan, oy, ox, ky, kx);
        }
    }
}

fn store_c(z: u32, m: u32, n: u32, v: f32) {
    let big_m = p(0u);
    let big_n = p(1u);
    switch MODE {
        case 0u: { c[(z * big_m + m) * big_n + n] = v; }
        case 1u: {
            let plane = oh() * ow();
            let img = n / plane;
            c[(img * oc() + z * og() + m) * plane + n % plane] = v;
        }
        case 2u: {
            let plane = hh() * ww();
            let img = n / plane;
            c[(img * ch() + z * cg() + m) * plane + n % plane] = v;
        }
        default: { c[(z * og() + m) * big_n + n] = v; }
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let big_m = p(0u);
    let big_n = p(1u);
    let big_k = p(2u);
    let z = wid.z + p(20u);
    let m0 = wid.y * BM;
    let n0 = (wid.x + p(3u)) * BN;
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var k0 = 0u; k0 < big_k; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + 256u * r;
            // A slice: consecutive invocations walk k (row-major A reads coalesce).
            let am = idx / BK;
            let ak = idx % BK;
            var va = 0.0;
            if (m0 + am < big_m && k0 + ak < big_k) { va = load_a(z, m0 + am, k0 + ak); }
            tile_a[ak * BM + am] = va;
            // B slice: consecutive invocations walk n.
            let bk = idx / BN;
            let bn = idx % BN;
            var vb = 0.0;
            if (k0 + bk < big_k && n0 + bn < big_n) { vb = load_b(z, k0 + bk, n0 + bn); }
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
            if (m < big_m && n < big_n) { store_c(z, m, n, acc[i * 4u + j]); }
        }
    }
}
