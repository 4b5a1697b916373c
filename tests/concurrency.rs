//! Graphs built and realized from several threads at once (on the cpu
//! backend, and on one GPU device shared by every thread) give exactly the
//! values the same graphs give one after another.

mod common;

use shadergrad::{Conv2dOpts, Result, Tensor};

/// A small training-shaped graph from `seed`: convolution, matmul,
/// softmax, a loss and its gradients; every value it makes, flattened.
fn work(seed: u64) -> Result<Vec<f32>> {
    let x = Tensor::randn_seeded(&[3, 2, 9, 7], seed);
    let k = Tensor::randn_seeded(&[4, 2, 3, 3], seed + 1).with_grad();
    let w = Tensor::randn_seeded(&[4 * 7 * 5, 33], seed + 2).with_grad();
    let h = x
        .conv2d(&k, None, Conv2dOpts::default())?
        .relu()
        .reshape(&[3, 4 * 7 * 5])?;
    let p = h.matmul(&w)?.softmax(1)?;
    let loss = p.mul(&p)?.sum_all().add_scalar(seed as f32);
    let grads = loss.backward()?;
    let gk = grads.get(&k).expect("kernel gradient");
    let gw = grads.get(&w).expect("weight gradient");
    Tensor::realize_all(&[loss.clone(), p.clone(), gk.clone(), gw.clone()])?;
    Ok([loss.to_vec()?, p.to_vec()?, gk.to_vec()?, gw.to_vec()?].concat())
}

fn threads_agree_with_serial() -> Result<()> {
    const SEEDS: u64 = 12;
    let serial: Vec<Vec<f32>> = (0..SEEDS).map(work).collect::<Result<_>>()?;
    let device = shadergrad::default_device();
    // 6 threads, each over every seed from its own starting point, so the
    // same graphs run at the same time in different orders.
    let results: Vec<Vec<(u64, Vec<f32>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                s.spawn(move || {
                    shadergrad::with_device(device, || {
                        (0..SEEDS)
                            .map(|i| {
                                let seed = (i + 2 * t) % SEEDS;
                                work(seed).map(|v| (seed, v))
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread finished"))
            .collect::<Result<Vec<_>>>()
    })?;
    for (t, per_thread) in results.iter().enumerate() {
        for (seed, values) in per_thread {
            assert_eq!(
                values, &serial[*seed as usize],
                "thread {t}, seed {seed}: differs from the serial result"
            );
        }
    }
    Ok(())
}

backend_tests!(threads_agree_with_serial);
