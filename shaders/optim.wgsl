// Optimizer updates, one invocation per element: a parameter's new value
// and new state in one pass. Each follows its reference in ops/optim.rs in
// the same f32 operations and order (a multiply by 1/x where the reference
// divides), so fused and unfused steps round alike.
//
// Bindings: p, g, the first and second state (Adam's m and v, SGD's
// velocity), then the new p and the new states. The gradient may be a
// strided view (a linear layer's weight gradient arrives transposed), read
// through `g_shape`/`g_strides` (up to 8 axes, collapsed by the host)
// instead of being copied dense first; the rest are dense.

const WORKGROUP: u32 = 256u;

struct AdamParams {
    n: u32,
    // Nonzero: AdamW's decoupled weight decay, by lr_wd.
    decay: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    // The bias corrections 1 / (1 - beta^t).
    inv_c1: f32,
    inv_c2: f32,
    lr_wd: f32,
    g_rank: u32,
    g_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    g_shape: array<vec4<u32>, 2>,
    g_strides: array<vec4<u32>, 2>,
}

struct SgdParams {
    n: u32,
    // Nonzero: L2 weight decay added to the gradient.
    decay: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    g_rank: u32,
    g_offset: u32,
    g_shape: array<vec4<u32>, 2>,
    g_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> adam_params: AdamParams;
@group(0) @binding(0) var<uniform> sgd_params: SgdParams;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> s1: array<f32>;
@group(0) @binding(4) var<storage, read> s2: array<f32>;
@group(0) @binding(5) var<storage, read_write> p_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> s1_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> s2_out: array<f32>;

// Where element `i` (row-major over the gradient's shape) is stored.
fn strided(i: u32, rank: u32, offset: u32, shape: array<vec4<u32>, 2>,
           strides: array<vec4<u32>, 2>) -> u32 {
    var rem = i;
    var off = offset;
    for (var d = i32(rank) - 1; d >= 0; d--) {
        let size = shape[u32(d) >> 2u][u32(d) & 3u];
        off += (rem % size) * strides[u32(d) >> 2u][u32(d) & 3u];
        rem /= size;
    }
    return off;
}

// One element's Adam step: (new p, new m, new v).
fn adam_step(p: f32, gi: f32, m0: f32, v0: f32, k: AdamParams) -> vec3<f32> {
    let m = m0 * k.beta1 + gi * k.one_minus_beta1;
    let v = v0 * k.beta2 + (gi * gi) * k.one_minus_beta2;
    let update = (m * k.inv_c1) * (1.0 / (sqrt(v * k.inv_c2) + k.eps));
    var pn = p + -(update * k.lr);
    if (k.decay != 0u) { pn = pn + -(p * k.lr_wd); }
    return vec3<f32>(pn, m, v);
}

@compute @workgroup_size(WORKGROUP)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    let k = adam_params;
    if (i >= k.n) { return; }
    let gi = g[strided(i, k.g_rank, k.g_offset, k.g_shape, k.g_strides)];
    let r = adam_step(p[i], gi, s1[i], s2[i], k);
    p_out[i] = r.x;
    s1_out[i] = r.y;
    s2_out[i] = r.z;
}

fn sgd_grad(i: u32) -> f32 {
    let k = sgd_params;
    let gi = g[strided(i, k.g_rank, k.g_offset, k.g_shape, k.g_strides)];
    if (sgd_params.decay != 0u) { return gi + p[i] * sgd_params.weight_decay; }
    return gi;
}

@compute @workgroup_size(WORKGROUP)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    if (i >= sgd_params.n) { return; }
    p_out[i] = p[i] + -(sgd_grad(i) * sgd_params.lr);
}

@compute @workgroup_size(WORKGROUP)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    let k = sgd_params;
    if (i >= k.n) { return; }
    let gi = sgd_grad(i);
    let v = s1[i] * k.momentum + gi;
    var step = v;
    if (k.nesterov != 0u) { step = gi + v * k.momentum; }
    p_out[i] = p[i] + -(step * k.lr);
    s1_out[i] = v;
}

// Adam over up to GROUP_SLOTS parameters in one dispatch, used where the
// device binds 7 * GROUP_SLOTS storage buffers: slot s has bindings
// 1 + 7s .. 7 + 7s (p, g, m, v, new p, new m, new v, as `adam`'s), and the
// workgroups cover the slots one after another from each slot's `start`.

const GROUP_SLOTS: u32 = 4u;

struct AdamSlot {
    n: u32,
    start: u32,
    g_rank: u32,
    g_offset: u32,
    g_shape: array<vec4<u32>, 2>,
    g_strides: array<vec4<u32>, 2>,
}

struct AdamGroupParams {
    // The step's constants (its n and gradient layout unused).
    adam: AdamParams,
    slot: array<AdamSlot, 4>,
    slots: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> group_params: AdamGroupParams;
@group(0) @binding(1) var<storage, read> p0: array<f32>;
@group(0) @binding(2) var<storage, read> g0: array<f32>;
@group(0) @binding(3) var<storage, read> m0: array<f32>;
@group(0) @binding(4) var<storage, read> v0: array<f32>;
@group(0) @binding(5) var<storage, read_write> p0_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> m0_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> v0_out: array<f32>;
@group(0) @binding(8) var<storage, read> p1: array<f32>;
@group(0) @binding(9) var<storage, read> g1: array<f32>;
@group(0) @binding(10) var<storage, read> m1: array<f32>;
@group(0) @binding(11) var<storage, read> v1: array<f32>;
@group(0) @binding(12) var<storage, read_write> p1_out: array<f32>;
@group(0) @binding(13) var<storage, read_write> m1_out: array<f32>;
@group(0) @binding(14) var<storage, read_write> v1_out: array<f32>;
@group(0) @binding(15) var<storage, read> p2: array<f32>;
@group(0) @binding(16) var<storage, read> g2: array<f32>;
@group(0) @binding(17) var<storage, read> m2: array<f32>;
@group(0) @binding(18) var<storage, read> v2: array<f32>;
@group(0) @binding(19) var<storage, read_write> p2_out: array<f32>;
@group(0) @binding(20) var<storage, read_write> m2_out: array<f32>;
@group(0) @binding(21) var<storage, read_write> v2_out: array<f32>;
@group(0) @binding(22) var<storage, read> p3: array<f32>;
@group(0) @binding(23) var<storage, read> g3: array<f32>;
@group(0) @binding(24) var<storage, read> m3: array<f32>;
@group(0) @binding(25) var<storage, read> v3: array<f32>;
@group(0) @binding(26) var<storage, read_write> p3_out: array<f32>;
@group(0) @binding(27) var<storage, read_write> m3_out: array<f32>;
@group(0) @binding(28) var<storage, read_write> v3_out: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn adam_group(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let wg = wid.x + wid.y * groups.x;
    var s = 0u;
    for (var j = 1u; j < min(group_params.slots, GROUP_SLOTS); j++) {
        if (wg >= group_params.slot[j].start) { s = j; }
    }
    let slot = group_params.slot[s];
    let k = group_params.adam;
    let i = (wg - slot.start) * WORKGROUP + lid;
    if (i >= slot.n) { return; }
    let gi = strided(i, slot.g_rank, slot.g_offset, slot.g_shape, slot.g_strides);
    switch s {
        case 0u: {
            let r = adam_step(p0[i], g0[gi], m0[i], v0[i], k);
            p0_out[i] = r.x; m0_out[i] = r.y; v0_out[i] = r.z;
        }
        case 1u: {
            let r = adam_step(p1[i], g1[gi], m1[i], v1[i], k);
            p1_out[i] = r.x; m1_out[i] = r.y; v1_out[i] = r.z;
        }
        case 2u: {
            let r = adam_step(p2[i], g2[gi], m2[i], v2[i], k);
            p2_out[i] = r.x; m2_out[i] = r.y; v2_out[i] = r.z;
        }
        default: {
            let r = adam_step(p3[i], g3[gi], m3[i], v3[i], k);
            p3_out[i] = r.x; m3_out[i] = r.y; v3_out[i] = r.z;
        }
    }
}
