//! The wgpu backend against the cpu backend: every kernel on odd shapes
//! (1, 7, 33, 257; broadcast, permuted, batched, grouped), gradients
//! included; fusion counted in dispatches; device errors and device rules.
//! (naga validation of every shader file and emitted kernel, and the
//! parameter-struct layouts, are unit tests in `src/backend/gpu/tests.rs`;
//! debug builds also validate every kernel the emitter generates while the
//! tests run.) Tests skip without an adapter unless `SHADERGRAD_REQUIRE_GPU=1`.

mod common;

use common::{data, gpu_device};
use shadergrad::{Conv2dOpts, DType, Device, Error, Result, Tensor};

/// Run `f` on the cpu backend and on the GPU and compare every output.
#[track_caller]
fn same_on_both(atol: f32, rtol: f32, f: impl Fn() -> Result<Vec<Tensor>>) {
    let Some(gpu) = gpu_device() else { return };
    let cpu_out = shadergrad::with_device(Device::Cpu, &f).expect("cpu run");
    let gpu_out = shadergrad::with_device(gpu, &f).expect("gpu run");
    assert_eq!(cpu_out.len(), gpu_out.len());
    for (k, (c, g)) in cpu_out.iter().zip(&gpu_out).enumerate() {
        assert!(g.device().is_gpu(), "output {k} did not run on the gpu");
        assert_eq!(c.shape(), g.shape(), "output {k} shape");
        let (c, g) = (c.to_vec().expect("cpu"), g.to_vec().expect("gpu"));
        for (i, (x, y)) in c.iter().zip(&g).enumerate() {
            let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * x.abs();
            assert!(ok, "output {k} element {i}: cpu {x} gpu {y}");
        }
    }
}

fn rt(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(data(shape.iter().product(), seed), shape).expect("shape")
}

#[test]
fn matmul_matches_cpu_on_odd_shapes() {
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 33, 1),
        (1, 257, 7),
        (33, 7, 257),
        (257, 33, 7),
        (65, 129, 67),
    ] {
        same_on_both(1e-4, 1e-4, || {
            let a = rt(&[m, k], 1);
            let b = rt(&[k, n], 2);
            let bt = rt(&[n, k], 3).t()?;
            let batched_a = rt(&[3, m, k], 4);
            // A batch broadcast through a stride-0 view.
            let shared_b = b.unsqueeze(0)?.expand(&[3, k, n])?;
            Ok(vec![
                a.matmul(&b)?,
                a.matmul(&bt)?,
                a.t()?.t()?.matmul(&b)?,
                batched_a.matmul(&shared_b)?,
                batched_a
                    .permute(&[0, 2, 1])?
                    .permute(&[0, 2, 1])?
                    .matmul(&shared_b)?,
            ])
        });
    }
}

#[test]
fn convolutions_and_their_gradients_match_cpu() {
    let cases = [
        // (x shape, weight shape, opts)
        ([2, 3, 9, 7], [4, 3, 3, 2], Conv2dOpts::default()),
        (
            [1, 3, 9, 7],
            [5, 3, 3, 3],
            Conv2dOpts {
                stride: (2, 1),
                padding: (1, 2),
                dilation: (1, 2),
                groups: 1,
            },
        ),
        (
            [2, 4, 7, 7],
            [6, 2, 3, 3],
            Conv2dOpts::default().groups(2).padding(1),
        ),
        ([1, 1, 1, 1], [1, 1, 1, 1], Conv2dOpts::default()),
        ([3, 2, 33, 5], [7, 2, 1, 3], Conv2dOpts::default().stride(3)),
    ];
    for (xs, ws, opts) in cases {
        same_on_both(1e-4, 1e-3, || {
            let x = rt(&xs, 5).with_grad();
            let w = rt(&ws, 6).with_grad();
            let bias = rt(&[ws[0]], 7).with_grad();
            let y = x.conv2d(&w, Some(&bias), opts)?;
            let r = rt(y.shape(), 8);
            let loss = y.mul(&r)?.sum_all();
            let g = loss.backward()?;
            Ok(vec![
                y,
                g.get(&x).expect("dx").clone(),
                g.get(&w).expect("dw").clone(),
                g.get(&bias).expect("db").clone(),
            ])
        });
    }
    // Transposed convolution runs through backward-data.
    same_on_both(1e-4, 1e-3, || {
        let x = rt(&[2, 4, 5, 6], 9);
        let w = rt(&[4, 3, 3, 3], 10);
        Ok(vec![x.conv_transpose2d(
            &w,
            None,
            Conv2dOpts::default().stride(2).padding(1),
            (1, 0),
        )?])
    });
}

#[test]
fn pooling_and_gradients_match_cpu() {
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0)] {
        same_on_both(1e-5, 1e-5, || {
            let x = rt(&[2, 3, 9, 7], 11).with_grad();
            let mx = x.max_pool2d(k, s, p)?;
            let av = x.avg_pool2d(k, s, p)?;
            let loss = mx
                .mul(&rt(mx.shape(), 12))?
                .sum_all()
                .add(&av.mul(&rt(av.shape(), 13))?.sum_all())?;
            let g = loss.backward()?;
            Ok(vec![mx, av, g.get(&x).expect("dx").clone()])
        });
    }
}

#[test]
fn reductions_match_cpu_on_views() {
    same_on_both(1e-4, 1e-4, || {
        let x = rt(&[7, 33, 5], 14);
        let p = x.permute(&[2, 0, 1])?;
        let long = rt(&[3, 257 * 33], 15);
        let labels = Tensor::from_slice_i32(&(0..33).collect::<Vec<_>>(), &[33])?;
        Ok(vec![
            p.sum(&[1], false)?,
            p.max(&[0, 2], true)?,
            x.sum_all(),
            long.sum(&[1], false)?,
            long.max(&[1], false)?,
            long.sum_all(),
            labels.sum(&[0], false)?.cast(DType::F32),
            rt(&[0, 4], 16).sum(&[0], false)?,
        ])
    });
}

#[test]
fn elementwise_chains_match_cpu() {
    same_on_both(1e-5, 1e-4, || {
        let a = rt(&[7, 33], 17);
        let b = rt(&[33], 18);
        let c = rt(&[7, 1], 19);
        let pos = a.abs().add_scalar(0.1);
        Ok(vec![
            a.mul(&b)?.add(&c)?.relu(),
            a.t()?.contiguous(),
            pos.log().exp().sqrt().recip(),
            a.sin().tanh().erf(),
            pos.pow(&b.abs().add_scalar(0.5))?,
            a.pow_scalar(3.0),
            a.maximum(&b)?.minimum(&c)?,
            a.lt(&b)?.add(&a.eq(&a)?)?,
            Tensor::where_(&a.gt(&c)?, &a, &b)?,
            a.gelu().add(&a.sigmoid())?.add(&a.softmax(-1)?)?,
            a.pad(&[(1, 2), (0, 3)])?,
            a.shrink(&[(1, 6), (2, 30)])?.exp(),
        ])
    });
}

#[test]
fn indexing_losses_and_random_match_cpu() {
    same_on_both(1e-5, 1e-4, || {
        let logits = rt(&[33, 7], 20).with_grad();
        let labels =
            Tensor::from_slice_i32(&(0..33).map(|i| (i * 5) % 7).collect::<Vec<_>>(), &[33])?;
        let loss = logits.cross_entropy(&labels, 0.1)?;
        let g = loss.backward()?;
        let table = rt(&[257, 7], 21).with_grad();
        let ids = Tensor::from_slice_i32(&[3, 256, 3, 0, 7, 3, 100], &[7])?;
        let emb = Tensor::embedding(&table, &ids)?;
        let ge = emb.mul(&rt(emb.shape(), 22))?.sum_all().backward()?;
        // Sources read where they lie: a transposed one gathered, a
        // broadcast gradient scattered.
        let src = rt(&[7, 33], 23).t()?.with_grad();
        let idx: Vec<i32> = (0..66).map(|i| (i * 3) % 7).collect();
        let picked = src.gather(1, &Tensor::from_slice_i32(&idx, &[33, 2])?)?;
        let gs = picked.sum_all().backward()?;
        Ok(vec![
            picked,
            gs.get(&src).expect("dsrc").clone(),
            loss,
            g.get(&logits).expect("dlogits").clone(),
            emb,
            ge.get(&table).expect("dtable").clone(),
            Tensor::rand_seeded(&[1000], 42),
            Tensor::arange(-3.0, 7.0, 0.5)?,
            Tensor::arange_i32(5, -30, -3)?.cast(DType::F32),
        ])
    });
}

#[test]
fn dispatches_beyond_the_workgroup_limit_are_split() {
    // 2^24 + 7 elements need more than 65,535 workgroups of 256.
    same_on_both(0.0, 1e-6, || {
        let n = (1 << 24) + 7;
        let x = Tensor::arange(0.0, n as f32, 1.0)?;
        let y = x.mul_scalar(0.5).add_scalar(1.0);
        Ok(vec![y.shrink(&[(n - 300, n)])?.contiguous()])
    });
}

#[test]
fn an_elementwise_chain_is_one_dispatch() -> Result<()> {
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    shadergrad::with_device(gpu, || {
        let (a, b, c) = (rt(&[7, 33], 1), rt(&[7, 33], 2), rt(&[33], 3));
        let y = a.mul(&b)?.add(&c)?.relu();
        y.realize()?;
        assert_eq!(shadergrad::last_realize_stats().dispatches, 1);
        let want: Vec<f32> = {
            let (a, b, c) = (a.to_vec()?, b.to_vec()?, c.to_vec()?);
            (0..7 * 33)
                .map(|i| (a[i] * b[i] + c[i % 33]).max(0.0))
                .collect()
        };
        common::assert_close(&y.to_vec()?, &want, 1e-6, 1e-6);
        Ok(())
    })
}

/// An optimizer step reads its loss, its metrics and the index-error flag
/// of its gather back in one copy: one wait per step, and a bad label
/// still fails that step with nothing committed.
#[test]
fn a_step_waits_once_and_a_bad_label_leaves_parameters_unchanged() -> Result<()> {
    use shadergrad::optim::{Adam, Optimizer, Parameter};
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    shadergrad::with_device(gpu, || {
        let w = Parameter::new(rt(&[5, 4], 1))?;
        let x = rt(&[3, 5], 2);
        let mut opt = Adam::new(vec![w.clone()], 0.1);
        let step = |opt: &mut Adam, labels: &[i32]| -> Result<Vec<f32>> {
            let logits = x.matmul(&w.get())?;
            let labels = Tensor::from_slice_i32(labels, &[3])?;
            let correct = logits.argmax(1, false)?.eq(&labels)?.sum_all();
            let loss = logits.cross_entropy(&labels, 0.0)?;
            opt.step_values(&loss, &[correct])
        };
        let before = shadergrad::total_realize_stats();
        let values = step(&mut opt, &[0, 3, 1])?;
        assert!(
            values[0].is_finite() && (0.0..=3.0).contains(&values[1]),
            "{values:?}"
        );
        assert_eq!(shadergrad::total_realize_stats().since(&before).waits, 1);
        let kept = w.get().to_vec()?;
        let err = step(&mut opt, &[0, 7, 1]).unwrap_err();
        assert!(err.to_string().contains("index 7 is out of range"), "{err}");
        assert_eq!(
            w.get().to_vec()?,
            kept,
            "the failed step changed a parameter"
        );
        // The next good step goes on from the kept values.
        step(&mut opt, &[2, 3, 1])?;
        assert_ne!(w.get().to_vec()?, kept);
        Ok(())
    })
}

#[test]
fn device_errors_are_values() -> Result<()> {
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    shadergrad::with_device(gpu, || {
        // An index out of range is reported after the submit.
        let src = rt(&[4, 3], 1);
        let bad = Tensor::from_slice_i32(&[0, 9], &[2, 1])?;
        let err = src.gather(1, &bad)?.to_vec().unwrap_err();
        assert!(err.to_string().contains("index 9 is out of range"), "{err}");
        // The failed submit cached nothing, not even values computed in the
        // same realize: every later read reports the error again.
        let exp = src.exp();
        let gathered = exp.gather(1, &bad)?;
        for _ in 0..2 {
            let err = Tensor::realize_all(&[exp.clone(), gathered.clone()]).unwrap_err();
            assert!(err.to_string().contains("out of range"), "{err}");
            assert!(!gathered.is_realized() && !exp.is_realized());
            let err = gathered.to_vec().unwrap_err();
            assert!(err.to_string().contains("out of range"), "{err}");
        }
        // A good read of the same source still works.
        let good = Tensor::from_slice_i32(&[0, 2], &[2, 1])?;
        assert_eq!(exp.gather(1, &good)?.to_vec()?.len(), 2);
        // More memory than one binding allows: a clear error, then smaller work runs.
        // (Random: arithmetic on a constant folds into a one-element constant.)
        let huge = Tensor::rand(&[1 << 20, 1 << 13]).add_scalar(1.0);
        let err = huge.realize().map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(err.to_string().contains("smaller batch"), "{err}");
        let small = Tensor::ones(&[1000]).add_scalar(1.0).sum_all().item()?;
        assert_eq!(small, 2000.0);
        Ok(())
    })
}

#[test]
fn unknown_devices_are_errors() {
    let err = Device::parse("gpu:99").unwrap_err();
    assert!(
        err.to_string().contains("no GPU adapter for gpu:99"),
        "{err}"
    );
    let err = Device::parse("tpu").unwrap_err();
    assert!(err.to_string().contains("auto, gpu, gpu:N"), "{err}");
    assert_eq!(Device::parse("cpu").expect("cpu"), Device::Cpu);
}

#[test]
fn mixing_devices_is_an_error_and_to_moves_both_ways() -> Result<()> {
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    let on_gpu = shadergrad::with_device(gpu, || rt(&[33], 1).exp());
    let on_cpu = shadergrad::with_device(Device::Cpu, || rt(&[33], 2));
    // Two devices in one op: an error naming both and the fix.
    let err = on_cpu.add(&on_gpu).map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("cpu") && err.contains(&gpu.to_string()) && err.contains(".to("),
        "{err}"
    );
    assert!(gpu.to_string().starts_with("gpu:"), "{gpu}");
    // Moved explicitly, a lazy GPU node feeds a cpu node and back, in one realize.
    let mixed = on_cpu.add(&on_gpu.to(Device::Cpu))?;
    assert_eq!(*mixed.device(), Device::Cpu);
    let back = on_gpu.mul(&mixed.to(gpu))?;
    assert_eq!(*back.device(), gpu);
    let (a, b) = (data(33, 1), data(33, 2));
    let want_mixed: Vec<f32> = (0..33).map(|i| b[i] + a[i].exp()).collect();
    let want_back: Vec<f32> = (0..33).map(|i| a[i].exp() * want_mixed[i]).collect();
    Tensor::realize_all(&[mixed.clone(), back.clone()])?;
    common::assert_close(&mixed.to_vec()?, &want_mixed, 1e-5, 1e-5);
    common::assert_close(&back.to_vec()?, &want_back, 1e-5, 1e-5);
    // Gradients come back across the move, each on its tensor's device.
    let w = shadergrad::with_device(gpu, || rt(&[33], 3)).with_grad();
    let loss = w.to(Device::Cpu).mul(&on_cpu)?.sum_all();
    let g = loss.backward()?.get(&w).cloned().expect("w has a gradient");
    assert_eq!(*g.device(), gpu);
    common::assert_close(&g.to_vec()?, &b, 1e-6, 1e-6);
    Ok(())
}

/// A GPU model's backward pass runs on the GPU wherever `backward` is
/// called (the thread's default device plays no part).
#[test]
fn gradients_live_on_their_tensors_device() -> Result<()> {
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    let (w, x) = shadergrad::with_device(gpu, || (rt(&[4, 7], 1).with_grad(), rt(&[7, 3], 2)));
    // Outside with_device: the default device is the cpu.
    let loss = w.matmul(&x)?.relu().mean_all();
    let grads = loss.backward()?;
    let g = grads.get(&w).expect("gradient");
    assert_eq!(*g.device(), gpu);
    let unused = shadergrad::with_device(gpu, || rt(&[2], 3)).with_grad();
    assert_eq!(*grads.get_or_zeros(&unused).device(), gpu);
    g.realize()?;
    let stats = shadergrad::last_realize_stats();
    assert!(stats.dispatches > 0 && stats.sessions == 1, "{stats:?}");
    Ok(())
}

/// One training step of the reference CNN (forward, backward, Adam) is one
/// realize; its dispatch count is what the GPU host pays per step, so it
/// must not creep up. Printed for the record (`--nocapture`).
#[test]
fn a_seed_cnn_step_records_few_dispatches() -> Result<()> {
    use shadergrad::nn::Module;
    let Some(gpu) = gpu_device() else {
        return Ok(());
    };
    shadergrad::with_device(gpu, || {
        shadergrad::manual_seed(0);
        let model = shadergrad::models::seed_cnn()?;
        let params = model.parameters().into_iter().map(|(_, p)| p).collect();
        let mut opt = shadergrad::Adam::new(params, 1e-3);
        let x = rt(&[4, 3, 32, 32], 1);
        let y = Tensor::from_slice_i32(&[0, 3, 7, 9], &[4])?;
        let mut counts = vec![];
        for _ in 0..3 {
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, 0.0)?;
            let correct = logits.detach().argmax(1, false)?.eq(&y)?.sum_all();
            shadergrad::Optimizer::step_with(&mut opt, &loss, std::slice::from_ref(&correct))?;
            counts.push(shadergrad::last_realize_stats().dispatches);
        }
        eprintln!("seed-cnn step dispatches: {counts:?}");
        // What Adam over the model's ten parameters costs alone: 3 where
        // the device binds adam_group's buffers, 10 where it cannot (GL).
        let step = shadergrad::optim::AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            t: 1,
        };
        let params: Vec<Tensor> = model.parameters().iter().map(|(_, p)| p.get()).collect();
        let states: Vec<Tensor> = params.iter().map(|p| p.square()).collect();
        Tensor::realize_all(&states)?;
        let mut updates = vec![];
        for (p, v) in params.iter().zip(&states) {
            updates.extend(shadergrad::optim::adam_update(p, p, v, v, &step)?);
        }
        Tensor::realize_all(&updates)?;
        let adam = shadergrad::last_realize_stats().dispatches;
        assert!(adam <= 10, "{adam}");
        // 36 + 3 at this writing (90 before the fused updates, 70 before
        // fused reductions, constant folding and shared subexpressions, 54
        // before the loss read the logits and Adam took four parameters a
        // dispatch, 45 before GEMMs and poolings added bias and relu as
        // they store): forward 7, loss 4, accuracy 2, backward 23.
        assert!(counts[2] <= 36 + adam, "{counts:?}, Adam alone {adam}");
        Ok(())
    })
}
