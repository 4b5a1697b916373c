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

@compute @workgroup_size(WORKGROUP)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP;
    let k = adam_params;
    if (i >= k.n) { return; }
    let gi = g[strided(i, k.g_rank, k.g_offset, k.g_shape, k.g_strides)];
    let m = s1[i] * k.beta1 + gi * k.one_minus_beta1;
    let v = s2[i] * k.beta2 + (gi * gi) * k.one_minus_beta2;
    let update = (m * k.inv_c1) * (1.0 / (sqrt(v * k.inv_c2) + k.eps));
    var pn = p[i] + -(update * k.lr);
    if (k.decay != 0u) { pn = pn + -(p[i] * k.lr_wd); }
    p_out[i] = pn;
    s1_out[i] = m;
    s2_out[i] = v;
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
