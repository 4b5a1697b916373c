// Max and average pooling over 2-D windows of dense NCHW planes, and their
// backward passes. The backward pass runs one invocation per input pixel
// and gathers from every window that covers it: no atomics, deterministic.
//
// `n` counts outputs for forward, inputs for backward.

override KIND: u32 = 0u;     // 0 max (NaN propagates; gradient to the first maximum), 1 average
const WORKGROUP: u32 = 256u;

struct PoolParams {
    n: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<private> NAN_BITS: u32 = 0x7fc00000u;
var<private> NEG_INF_BITS: u32 = 0xff800000u;

fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }

// Clipped window [lo, hi) of output position o along one axis.
fn window(o: u32, size: u32, k: u32, s: u32, pad: u32) -> vec2<u32> {
    let start = i32(o * s) - i32(pad);
    let lo = max(start, 0);
    let hi = min(max(start + i32(k), 0), i32(size));
    return vec2<u32>(u32(lo), u32(max(hi, lo)));
}

// Plane index of the first maximum of window (oy, ox) (row-major scan,
// replaced only by a strictly larger value), or 0xffffffff when the window
// lies entirely in the padding.
fn argmax(base: u32, oy: u32, ox: u32) -> u32 {
    let rows = window(oy, params.h, params.kh, params.sh, params.ph);
    let cols = window(ox, params.w, params.kw, params.sw, params.pw);
    if (rows.x == rows.y || cols.x == cols.y) { return 0xffffffffu; }
    var best = rows.x * params.w + cols.x;
    var bv = x[base + best];
    for (var y = rows.x; y < rows.y; y++) {
        for (var c = cols.x; c < cols.y; c++) {
            let v = x[base + y * params.w + c];
            if (v > bv) { bv = v; best = y * params.w + c; }
        }
    }
    return best;
}

@compute @workgroup_size(WORKGROUP)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let plane_out = params.oh * params.ow;
    let plane = i / plane_out;
    let oy = (i % plane_out) / params.ow;
    let ox = i % params.ow;
    let base = plane * params.h * params.w;
    let rows = window(oy, params.h, params.kh, params.sh, params.ph);
    let cols = window(ox, params.w, params.kw, params.sw, params.pw);
    var m = bitcast<f32>(NEG_INF_BITS);
    var sum = 0.0;
    var nan = false;
    for (var y = rows.x; y < rows.y; y++) {
        for (var c = cols.x; c < cols.y; c++) {
            let v = x[base + y * params.w + c];
            if (v > m) { m = v; }
            nan = nan || is_nan(v);
            sum += v;
        }
    }
    if (KIND == 0u) {
        out[i] = select(m, bitcast<f32>(NAN_BITS), nan);
    } else {
        out[i] = sum / f32(params.kh * params.kw);
    }
}

// First output index along one axis whose window can cover input position `v`.
fn first_cover(v: u32, k: u32, s: u32, pad: u32) -> u32 {
    let t = i32(v + pad) - i32(k) + 1;
    if (t <= 0) { return 0u; }
    return (u32(t) + s - 1u) / s;
}

@compute @workgroup_size(WORKGROUP)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let plane_in = params.h * params.w;
    let plane = i / plane_in;
    let pos = i % plane_in;
    let y = pos / params.w;
    let xx = pos % params.w;
    let base = plane * plane_in;
    let dbase = plane * params.oh * params.ow;
    let area = f32(params.kh * params.kw);
    var g = 0.0;
    let oy_hi = min((y + params.ph) / params.sh + 1u, params.oh);
    let ox_hi = min((xx + params.pw) / params.sw + 1u, params.ow);
    for (var oy = first_cover(y, params.kh, params.sh, params.ph); oy < oy_hi; oy++) {
        let rows = window(oy, params.h, params.kh, params.sh, params.ph);
        if (y < rows.x || y >= rows.y) { continue; }
        for (var ox = first_cover(xx, params.kw, params.sw, params.pw); ox < ox_hi; ox++) {
            let cols = window(ox, params.w, params.kw, params.sw, params.pw);
            if (xx < cols.x || xx >= cols.y) { continue; }
            let d = dy[dbase + oy * params.ow + ox];
            if (KIND == 0u) {
                if (argmax(base, oy, ox) == pos) { g += d; }
            } else {
                g += d / area;
            }
        }
    }
    out[i] = g;
}
