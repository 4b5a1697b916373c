use shadergrad::{Device, Tensor};
fn main() {
    let d = Device::gpu(0).unwrap();
    shadergrad::with_device(d, || {
        let x = Tensor::from_vec(vec![1.0f32; 64], &[64]).unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let mut y = x.clone();
            for i in 0..300 {
                // exp between adds stops nothing: SHADERGRAD_FUSION=0 keeps each op a dispatch
                y = if i % 2 == 0 {
                    y.add_scalar(0.001)
                } else {
                    y.mul_scalar(0.999)
                };
            }
            y.realize().unwrap();
            let n = shadergrad::backend::gpu::last_dispatch_count();
            let dt = t.elapsed().as_secs_f64();
            let _ = y.to_vec().unwrap();
            println!(
                "{n} dispatches in {:.2} ms: {:.1} us each",
                dt * 1e3,
                dt * 1e6 / n as f64
            );
        }
    });
}
