// Max and average pooling over 2-D windows of dense NCHW planes, and their
// backward passes.
//
// `max_forward` writes each window's maximum (NaN when the window holds
// one) and the plane index of its first maximum (row-major scan, replaced
// only by a strictly larger value; -1 for a window wholly in the padding).
// `max_backward` reads those indices, never the input. Both backward
// passes run one invocation per input pixel and gather from every window
// that covers it: no atomics, deterministic.
//
// `n` counts outputs for forward, inputs for backward.
//
// EPILOGUE (max_forward): 1 adds `bias` per channel (`channels` of them)
// to each maximum as it is stored, 2 applies relu after: a layer's
// `relu(max_pool(conv) + b)` (pooled before its bias and relu, see
// ops/conv.rs) in the f32 operations of the fused pass it replaces.

override EPILOGUE: u32 = 0u;

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
    channels: u32,
}

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// Max pooling's argmax: written by max_forward, read by max_backward.
@group(0) @binding(4) var<storage, read_write> argmax: array<i32>;
// One value per channel (EPILOGUE > 0; any buffer otherwise).
@group(0) @binding(5) var<storage, read> bias: array<f32>;

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

// Output i as (plane, oy, ox).
fn output_position(i: u32) -> vec3<u32> {
    let plane_out = params.oh * params.ow;
    return vec3<u32>(i / plane_out, (i % plane_out) / params.ow, i % params.ow);
}

// A maximum as stored: with the bias and relu of the EPILOGUE.
fn epilogue(plane: u32, v: f32) -> f32 {
    if (EPILOGUE == 0u) { return v; }
    let y = v + bias[plane % params.channels];
    if (EPILOGUE == 2u) { return select(0.0, y, y > 0.0); }
    return y;
}

@compute @workgroup_size(WORKGROUP)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let o = output_position(i);
    let base = o.x * params.h * params.w;
    let rows = window(o.y, params.h, params.kh, params.sh, params.ph);
    let cols = window(o.z, params.w, params.kw, params.sw, params.pw);
    var m = bitcast<f32>(NEG_INF_BITS);
    var best = -1;
    var nan = false;
    for (var y = rows.x; y < rows.y; y++) {
        for (var c = cols.x; c < cols.y; c++) {
            let v = x[base + y * params.w + c];
            if (best < 0 || v > m) { m = v; best = i32(y * params.w + c); }
            nan = nan || is_nan(v);
        }
    }
    out[i] = epilogue(o.x, select(m, bitcast<f32>(NAN_BITS), nan));
    argmax[i] = best;
}

@compute @workgroup_size(WORKGROUP)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let o = output_position(i);
    let base = o.x * params.h * params.w;
    let rows = window(o.y, params.h, params.kh, params.sh, params.ph);
    let cols = window(o.z, params.w, params.kw, params.sw, params.pw);
    var sum = 0.0;
    for (var y = rows.x; y < rows.y; y++) {
        for (var c = cols.x; c < cols.y; c++) {
            sum += x[base + y * params.w + c];
        }
    }
    out[i] = sum / f32(params.kh * params.kw);
}

// The output positions [lo, hi) along one axis whose windows cover input
// position `v`: start <= v < start + k with start = o * s - pad.
fn covers(v: u32, outs: u32, k: u32, s: u32, pad: u32) -> vec2<u32> {
    let t = i32(v + pad) - i32(k) + 1;
    var lo = 0u;
    if (t > 0) { lo = (u32(t) + s - 1u) / s; }
    return vec2<u32>(lo, min((v + pad) / s + 1u, outs));
}

// Input pixel i as (plane, y, x).
fn input_position(i: u32) -> vec3<u32> {
    let plane_in = params.h * params.w;
    let pos = i % plane_in;
    return vec3<u32>(i / plane_in, pos / params.w, pos % params.w);
}

// dy where the window's argmax is this pixel.
@compute @workgroup_size(WORKGROUP)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let p = input_position(i);
    let pos = i32(p.y * params.w + p.z);
    let dbase = p.x * params.oh * params.ow;
    let rows = covers(p.y, params.oh, params.kh, params.sh, params.ph);
    let cols = covers(p.z, params.ow, params.kw, params.sw, params.pw);
    var g = 0.0;
    for (var oy = rows.x; oy < rows.y; oy++) {
        for (var ox = cols.x; ox < cols.y; ox++) {
            let o = dbase + oy * params.ow + ox;
            if (argmax[o] == pos) { g += dy[o]; }
        }
    }
    out[i] = g;
}

// A share of every covering window's dy.
@compute @workgroup_size(WORKGROUP)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= params.n) { return; }
    let p = input_position(i);
    let dbase = p.x * params.oh * params.ow;
    let rows = covers(p.y, params.oh, params.kh, params.sh, params.ph);
    let cols = covers(p.z, params.ow, params.kw, params.sw, params.pw);
    let area = f32(params.kh * params.kw);
    var g = 0.0;
    for (var oy = rows.x; oy < rows.y; oy++) {
        for (var ox = cols.x; ox < cols.y; ox++) {
            g += dy[dbase + oy * params.ow + ox] / area;
        }
    }
    out[i] = g;
}
