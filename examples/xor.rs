//! A two-layer MLP learns XOR: the smallest complete training loop.
//!
//!     cargo run --release --example xor

use shadergrad::{Adam, Optimizer, Parameter, Result, Tensor};

fn main() -> Result<()> {
    shadergrad::manual_seed(0);
    let x = Tensor::from_slice(&[0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2])?;
    let y = Tensor::from_slice(&[0., 1., 1., 0.], &[4, 1])?;
    let uniform = |shape: &[usize], a: f32| {
        Parameter::new(Tensor::rand(shape).mul_scalar(2.0 * a).add_scalar(-a))
    };
    let (w1, b1) = (uniform(&[8, 2], 1.0)?, Parameter::new(Tensor::zeros(&[8]))?);
    let (w2, b2) = (uniform(&[1, 8], 0.8)?, Parameter::new(Tensor::zeros(&[1]))?);
    let forward = || {
        x.linear(&w1.get(), Some(&b1.get()))?
            .tanh()
            .linear(&w2.get(), Some(&b2.get()))
    };

    let mut opt = Adam::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], 0.05);
    for step in 0..=300 {
        // Builds forward + backward + update lazily, then runs them as one schedule.
        let loss = opt.step(&forward()?.bce_with_logits(&y)?)?;
        if step % 50 == 0 {
            println!("step {step:3}  loss {loss:.4}");
        }
    }
    println!("predictions {:?}", forward()?.sigmoid().to_vec()?);
    Ok(())
}
