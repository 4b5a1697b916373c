//! Optimizers against hand-computed steps, and small networks that must learn.

mod common;
use common::*;
use shadergrad::optim::AdamStep;
use shadergrad::{Adam, Conv2dOpts, Optimizer, Parameter, Result, Sgd, Tensor};

/// Uniform in [-a, a) (Glorot/Kaiming-style init for the tests).
fn uniform(shape: &[usize], a: f32) -> Result<Parameter> {
    Parameter::new(Tensor::rand(shape).mul_scalar(2.0 * a).add_scalar(-a))
}

fn sgd_steps_match_hand_computation() -> Result<()> {
    // loss = sum(p^2): grad 2p. Momentum 0.5, lr 0.1, from p = 1:
    // v1 = 2, p1 = 1 - 0.2 = 0.8; v2 = 0.5*2 + 1.6 = 2.6, p2 = 0.8 - 0.26 = 0.54
    let p = Parameter::new(t(&[1.0], &[1]))?;
    let mut opt = Sgd::new(vec![p.clone()], 0.1).momentum(0.5, false);
    for _ in 0..2 {
        opt.step(&p.get().square().sum_all())?;
    }
    assert_close(&p.get().to_vec()?, &[0.54], 1e-6, 1e-6);
    // Nesterov: g + mu * v.  step 1: v=2, g'=2+1=3, p=0.7
    let q = Parameter::new(t(&[1.0], &[1]))?;
    let mut opt = Sgd::new(vec![q.clone()], 0.1).momentum(0.5, true);
    opt.step(&q.get().square().sum_all())?;
    assert_close(&q.get().to_vec()?, &[0.7], 1e-6, 1e-6);
    // weight decay adds wd * p to the gradient: 1 - 0.1 * (2 + 0.5) = 0.75
    let r = Parameter::new(t(&[1.0], &[1]))?;
    let mut opt = Sgd::new(vec![r.clone()], 0.1).weight_decay(0.5);
    opt.step(&r.get().square().sum_all())?;
    assert_close(&r.get().to_vec()?, &[0.75], 1e-6, 1e-6);
    Ok(())
}

fn adam_steps_match_hand_computation() -> Result<()> {
    // The first Adam step moves each weight by ~lr against the gradient's sign.
    let p = Parameter::new(t(&[1.0, -2.0], &[2]))?;
    let mut opt = Adam::new(vec![p.clone()], 0.1);
    let loss = opt.step(&p.get().square().sum_all())?;
    assert_close(&[loss], &[5.0], 1e-6, 0.0);
    assert_close(&p.get().to_vec()?, &[0.9, -1.9], 1e-5, 0.0);
    // Second step by hand: g = 2p; m = 0.9m + 0.1g; v = 0.999v + 0.001g^2
    let (g1, g2) = (2.0f64, 1.8f64);
    let m = 0.9 * (0.1 * g1) + 0.1 * g2;
    let v = 0.999 * (0.001 * g1 * g1) + 0.001 * g2 * g2;
    let step = 0.1 * (m / (1.0 - 0.81)) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-7);
    opt.step(&p.get().square().sum_all())?;
    assert_close(&p.get().to_vec()?[..1], &[(0.9 - step) as f32], 1e-5, 0.0);
    // A NaN loss is an error and leaves the parameters alone.
    let before = p.get().to_vec()?;
    let bad = p.get().sum_all().mul_scalar(f32::NAN);
    assert!(opt.step(&bad).is_err());
    assert_eq!(p.get().to_vec()?, before);
    Ok(())
}

fn mlp_learns_xor() -> Result<()> {
    shadergrad::manual_seed(0);
    let x = t(&[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]);
    let y = t(&[0.0, 1.0, 1.0, 0.0], &[4, 1]);
    let w1 = uniform(&[8, 2], 1.0)?;
    let b1 = Parameter::new(Tensor::zeros(&[8]))?;
    let w2 = uniform(&[1, 8], 0.8)?;
    let b2 = Parameter::new(Tensor::zeros(&[1]))?;
    let forward = || -> Result<Tensor> {
        x.linear(&w1.get(), Some(&b1.get()))?
            .tanh()
            .linear(&w2.get(), Some(&b2.get()))
    };
    let mut opt = Adam::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], 0.05);
    let mut loss = f32::INFINITY;
    for _ in 0..300 {
        loss = opt.step(&forward()?.bce_with_logits(&y)?)?;
    }
    assert!(loss < 0.05, "XOR loss after 300 steps: {loss}");
    let pred = forward()?.sigmoid().to_vec()?;
    for (p, want) in pred.iter().zip([0.0, 1.0, 1.0, 0.0]) {
        assert!((p - want).abs() < 0.2, "prediction {pred:?}");
    }
    Ok(())
}

/// 8x8 single-channel images: class 0 has a bright horizontal bar, class 1 a
/// vertical one, at random positions, over noise.
fn bars(n: usize, seed: u64) -> (Tensor, Tensor) {
    let noise = data(n * 64, seed);
    let pos = data(n, seed + 1);
    let mut img = vec![0.0f32; n * 64];
    let mut labels = vec![0i32; n];
    for i in 0..n {
        let class = i % 2;
        let at = ((pos[i] + 1.0) * 3.99) as usize; // 0..7
        for r in 0..8 {
            for c in 0..8 {
                let on = if class == 0 { r == at } else { c == at };
                img[i * 64 + r * 8 + c] =
                    0.3 * noise[i * 64 + r * 8 + c] + if on { 1.0 } else { 0.0 };
            }
        }
        labels[i] = class as i32;
    }
    (t(&img, &[n, 1, 8, 8]), ti(&labels, &[n]))
}

fn cnn_fits_two_class_images() -> Result<()> {
    shadergrad::manual_seed(1);
    let (x, y) = bars(32, 7);
    let c1 = uniform(&[4, 1, 3, 3], (6.0f32 / 9.0).sqrt())?;
    let c2 = uniform(&[8, 4, 3, 3], (6.0f32 / 36.0).sqrt())?;
    let fc = uniform(&[2, 8 * 2 * 2], (6.0f32 / 32.0).sqrt())?;
    let fb = Parameter::new(Tensor::zeros(&[2]))?;
    let forward = || -> Result<Tensor> {
        let h = x
            .conv2d(&c1.get(), None, Conv2dOpts::default().padding(1))?
            .relu()
            .max_pool2d(2, 2, 0)?;
        let h = h
            .conv2d(&c2.get(), None, Conv2dOpts::default())?
            .relu()
            .max_pool2d(1, 1, 0)?;
        h.flatten(1, 3)?.linear(&fc.get(), Some(&fb.get()))
    };
    let mut opt = Adam::new(vec![c1.clone(), c2.clone(), fc.clone(), fb.clone()], 0.02);
    let first = opt.step(&forward()?.cross_entropy(&y, 0.0)?)?;
    let mut loss = first;
    for _ in 0..80 {
        loss = opt.step(&forward()?.cross_entropy(&y, 0.0)?)?;
    }
    let pred = forward()?.argmax(1, false)?.to_vec_i32()?;
    let labels = y.to_vec_i32()?;
    let correct = pred.iter().zip(&labels).filter(|(a, b)| a == b).count();
    assert_eq!(
        correct, 32,
        "training accuracy {correct}/32, loss {first} -> {loss}"
    );
    assert!(loss < 0.1, "loss {first} -> {loss}");
    Ok(())
}

/// Largest distance between two f32 vectors in units in the last place.
fn max_ulps(a: &[f32], b: &[f32]) -> u32 {
    // Map the bits onto a line where adjacent floats differ by 1.
    let key = |x: f32| {
        let b = x.to_bits() as i32;
        if b < 0 {
            i32::MIN - b
        } else {
            b
        }
    };
    a.iter()
        .zip(b)
        .map(|(&x, &y)| key(x).abs_diff(key(y)))
        .max()
        .unwrap_or(0)
}

/// The update kernels against the same arithmetic as elementwise ops:
/// five steps of each optimizer on a small MLP, from the same start. On
/// the cpu backend both run the same f32 operations in the same order, so
/// they agree bit for bit; GPU drivers may contract a multiply-add into an
/// fma in one form and not the other, so there they agree within 1 ulp.
fn fused_updates_equal_the_unfused_ones() -> Result<()> {
    let tolerance = if shadergrad::default_device().is_gpu() {
        1
    } else {
        0
    };
    let x = rt(&[16, 5], 1);
    let y = ti(&(0..16).map(|i| i % 3).collect::<Vec<_>>(), &[16]);
    type Make = fn(Vec<Parameter>, bool) -> Box<dyn Optimizer>;
    let optimizers: [(&str, Make); 5] = [
        ("adam", |p, f| Box::new(Adam::new(p, 0.01).fused(f))),
        ("adamw", |p, f| {
            Box::new(Adam::new(p, 0.01).weight_decay(0.1).fused(f))
        }),
        ("gd", |p, f| Box::new(Sgd::new(p, 0.1).fused(f))),
        ("sgd momentum", |p, f| {
            Box::new(Sgd::new(p, 0.1).momentum(0.9, false).fused(f))
        }),
        ("nesterov + l2", |p, f| {
            Box::new(
                Sgd::new(p, 0.1)
                    .momentum(0.9, true)
                    .weight_decay(0.01)
                    .fused(f),
            )
        }),
    ];
    for (name, make) in optimizers {
        let run = |fused: bool| -> Result<Vec<Vec<f32>>> {
            let params = vec![
                Parameter::new(rt(&[8, 5], 2))?,
                Parameter::new(rt(&[8], 3))?,
                Parameter::new(rt(&[3, 8], 4))?,
            ];
            let mut opt = make(params.clone(), fused);
            for _ in 0..5 {
                let h = x.linear(&params[0].get(), Some(&params[1].get()))?.tanh();
                let logits = h.linear(&params[2].get(), None)?;
                opt.step(&logits.cross_entropy(&y, 0.0)?)?;
            }
            params.iter().map(|p| p.get().to_vec()).collect()
        };
        let (fused, unfused) = (run(true)?, run(false)?);
        for (k, (a, b)) in fused.iter().zip(&unfused).enumerate() {
            let d = max_ulps(a, b);
            assert!(d <= tolerance, "{name}: parameter {k} differs by {d} ulp");
        }
        assert_ne!(
            fused[0],
            rt(&[8, 5], 2).to_vec()?,
            "{name}: the weights moved"
        );
    }
    Ok(())
}

/// The update for one parameter is one kernel on the GPU (three outputs
/// for Adam) and one cpu pass, also when the gradient arrives transposed
/// (as a linear layer's weight gradient does): it is read in place.
fn an_update_is_one_kernel() -> Result<()> {
    let (p, g, m, v) = (
        rt(&[33, 7], 1),
        rt(&[7, 33], 2),
        rt(&[33, 7], 3),
        rt(&[33, 7], 4),
    );
    Tensor::realize_all(&[p.clone(), g.clone(), m.clone(), v.clone()])?;
    let (g, v) = (g.t()?, v.abs());
    Tensor::realize_all(&[g.clone(), v.clone()])?;
    let step = AdamStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
        t: 2,
    };
    let outs = shadergrad::optim::adam_update(&p, &g, &m, &v, &step)?;
    Tensor::realize_all(&outs)?;
    let stats = shadergrad::last_realize_stats();
    assert_eq!(stats.kernels, 1, "{stats:?}");
    if shadergrad::default_device().is_gpu() {
        assert_eq!(stats.dispatches, 1, "{stats:?}");
    }
    let reference = shadergrad::optim::adam_update_unfused(&p, &g, &m, &v, &step)?;
    for (a, b) in outs.iter().zip(&reference) {
        assert!(max_ulps(&a.to_vec()?, &b.to_vec()?) <= 1);
    }
    Ok(())
}

backend_tests!(
    fused_updates_equal_the_unfused_ones,
    an_update_is_one_kernel,
    sgd_steps_match_hand_computation,
    adam_steps_match_hand_computation,
    mlp_learns_xor,
    cnn_fits_two_class_images,
);
