// Peak probe of `shadergrad bench`: how many f32 fused multiply-adds per
// second the device sustains, so each kernel's GFLOP/s can be read as a
// fraction of what this device can do.
//
// Each invocation runs eight independent vec4 chains (enough to hide the
// FMA latency) for `iterations` rounds of four steps, and stores their sum
// so that nothing is dead code. FLOPs = invocations * iterations * 256.

const WORKGROUP: u32 = 256u;

struct ProbeParams {
    iterations: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: ProbeParams;
@group(0) @binding(1) var<storage, read_write> sink: array<vec4<f32>>;

@compute @workgroup_size(WORKGROUP)
fn fma_throughput(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WORKGROUP;
    let s = f32(i & 1023u) * 1e-6;
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    // Contracting towards 1e-4 / (1 - 0.9999) = 1: values stay finite.
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var k = 0u; k < params.iterations; k++) {
        for (var u = 0u; u < 4u; u++) {
            a0 = fma(a0, m, c);
            a1 = fma(a1, m, c);
            a2 = fma(a2, m, c);
            a3 = fma(a3, m, c);
            a4 = fma(a4, m, c);
            a5 = fma(a5, m, c);
            a6 = fma(a6, m, c);
            a7 = fma(a7, m, c);
        }
    }
    sink[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}
