//! Layers, initialisers, schedules and penalties.

mod common;
use common::*;
use shadergrad::nn::{named_tensors, parameter_count, BatchNorm2d, Dropout, Init, Linear, Module};
use shadergrad::optim::{l1_penalty, l2_penalty, LrSchedule};
use shadergrad::{Adam, Optimizer, Parameter, Result, Tensor};

fn seed_cnn_matches_keras_summary() -> Result<()> {
    let m = shadergrad::models::seed_cnn()?;
    // Keras' model.summary() for the founding example: 122,570 parameters.
    assert_eq!(parameter_count(&m), 122_570);
    let names: Vec<String> = named_tensors(&m).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names[..2],
        ["conv1.weight".to_string(), "conv1.bias".to_string()]
    );
    assert_eq!(names.len(), 10);
    let y = m.forward(&rt(&[2, 3, 32, 32], 1))?;
    assert_eq!(y.shape(), &[2, 10]);
    assert!(shadergrad::models::build("nope").is_err());
    Ok(())
}

fn glorot_bounds() -> Result<()> {
    shadergrad::manual_seed(5);
    let l = Linear::new(300, 100, Init::GlorotUniform)?;
    let w = l.weight.get().to_vec()?;
    let a = (6.0f32 / 400.0).sqrt();
    assert!(w.iter().all(|v| v.abs() <= a));
    assert!(w.iter().any(|v| v.abs() > 0.9 * a), "uses the whole range");
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert_eq!(
        l.bias.as_ref().expect("bias").get().to_vec()?,
        vec![0.0; 100]
    );
    Ok(())
}

fn batch_norm_train_and_eval() -> Result<()> {
    let mut bn = BatchNorm2d::new(3)?;
    let x = rt(&[4, 3, 5, 5], 1).mul_scalar(3.0).add_scalar(2.0);
    let y = bn.forward(&x)?;
    // Training: each channel normalised with its batch statistics.
    let m = y.mean(&[0, 2, 3], false)?.to_vec()?;
    let v = y.var(&[0, 2, 3], false)?.to_vec()?;
    assert_close(&m, &[0.0; 3], 1e-5, 0.0);
    assert_close(&v, &[1.0; 3], 1e-3, 0.0);
    // Running stats are realized with the next optimizer step:
    // 0.9 * initial + 0.1 * batch (unbiased variance).
    let params: Vec<Parameter> = bn.parameters().into_iter().map(|(_, p)| p).collect();
    let mut opt = Adam::new(params, 0.0);
    opt.step(&y.sum_all())?;
    let batch_mean = x.mean(&[0, 2, 3], false)?.to_vec()?;
    let n = 100.0f32;
    let batch_var: Vec<f32> = x
        .var(&[0, 2, 3], false)?
        .to_vec()?
        .iter()
        .map(|v| v * n / (n - 1.0))
        .collect();
    assert!(bn.running_mean.get().is_realized());
    assert_close(
        &bn.running_mean.get().to_vec()?,
        &batch_mean.iter().map(|m| 0.1 * m).collect::<Vec<_>>(),
        1e-5,
        1e-5,
    );
    assert_close(
        &bn.running_var.get().to_vec()?,
        &batch_var.iter().map(|v| 0.9 + 0.1 * v).collect::<Vec<_>>(),
        1e-4,
        1e-4,
    );
    // Evaluation uses the running statistics.
    bn.set_training(false);
    let e = bn.forward(&x)?.to_vec()?;
    let (rm, rv) = (
        bn.running_mean.get().to_vec()?,
        bn.running_var.get().to_vec()?,
    );
    let xv = x.to_vec()?;
    let want: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / 25) % 3;
            (v - rm[c]) / (rv[c] + 1e-5).sqrt()
        })
        .collect();
    assert_close(&e, &want, 1e-4, 1e-4);
    assert!(
        bn.forward(&rt(&[2, 4, 3, 3], 2)).is_err(),
        "channel mismatch"
    );
    Ok(())
}

fn batch_norm_gradient() -> Result<()> {
    let bn = BatchNorm2d::new(2)?;
    gradcheck(vec![rt(&[3, 2, 2, 2], 4)], move |v| bn.forward(&v[0]));
    Ok(())
}

fn dropout_layer_modes() -> Result<()> {
    let mut d = Dropout::new(0.5);
    let x = Tensor::ones(&[1000]);
    let train = d.forward(&x)?.to_vec()?;
    assert!(train.contains(&0.0) && train.contains(&2.0));
    d.set_training(false);
    assert_eq!(d.forward(&x)?.to_vec()?, vec![1.0; 1000]);
    Ok(())
}

fn schedules() -> Result<()> {
    let c = LrSchedule::Cosine { min_lr: 0.0 };
    assert_close(
        &[
            c.lr_at(1.0, 0, 100),
            c.lr_at(1.0, 50, 100),
            c.lr_at(1.0, 100, 100),
        ],
        &[1.0, 0.5, 0.0],
        1e-6,
        0.0,
    );
    let s = LrSchedule::Step {
        every: 10,
        gamma: 0.5,
    };
    assert_close(
        &[
            s.lr_at(1.0, 9, 100),
            s.lr_at(1.0, 10, 100),
            s.lr_at(1.0, 25, 100),
        ],
        &[1.0, 0.5, 0.25],
        1e-6,
        0.0,
    );
    let o = LrSchedule::OneCycle { warmup: 0.3 };
    assert_close(
        &[o.lr_at(1.0, 0, 100), o.lr_at(1.0, 30, 100)],
        &[0.04, 1.0],
        1e-6,
        0.0,
    );
    assert!(o.lr_at(1.0, 100, 100) < 1e-3);
    assert_eq!(LrSchedule::parse("constant", 10)?.lr_at(0.1, 7, 10), 0.1);
    assert!(LrSchedule::parse("sometimes", 10).is_err());
    Ok(())
}

fn penalties() -> Result<()> {
    let p = Parameter::new(t(&[1.0, -2.0], &[2]))?;
    let l1 = l1_penalty(std::slice::from_ref(&p), 0.1)?;
    let l2 = l2_penalty(std::slice::from_ref(&p), 0.1)?;
    assert_close(&[l1.item()?, l2.item()?], &[0.3, 0.5], 1e-6, 0.0);
    let g = l1.add(&l2)?.backward()?;
    // d/dp (0.1 |p| + 0.1 p^2) = 0.1 sign(p) + 0.2 p
    assert_tensor(g.get(&p.get()).expect("grad"), &[2], &[0.3, -0.5]);
    Ok(())
}

backend_tests!(
    seed_cnn_matches_keras_summary,
    glorot_bounds,
    batch_norm_train_and_eval,
    batch_norm_gradient,
    dropout_layer_modes,
    schedules,
    penalties,
);
