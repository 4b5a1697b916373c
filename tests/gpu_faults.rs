//! GPU faults as errors: a memory cap on the buffer pool
//! (`Device::set_memory_limit`, or `SHADERGRAD_GPU_MEMORY_LIMIT`) makes a
//! too-large batch fail with `Error::OutOfMemory`; the caller retries with
//! a smaller batch in the same process and gets the cpu backend's numbers.
//! A tensor larger than one storage binding is an error too, and so is
//! every use of a device that was lost. Its own test binary, because the
//! cap applies to the whole (shared) device.

mod common;

use shadergrad::nn::{Init, Linear, Module};
use shadergrad::{with_device, Device, Error, Tensor};

/// One training step's loss and first-layer gradient for `batch` rows of
/// a 256-wide MLP (activations grow with the batch).
fn step(layers: &(Linear, Linear), batch: usize) -> shadergrad::Result<(f32, Vec<f32>)> {
    let x = Tensor::from_vec(common::data(batch * 256, 3), &[batch, 256])?;
    let h = layers.0.forward(&x)?.relu();
    let loss = layers.1.forward(&h)?.square().mean_all();
    let w = layers.0.weight.get();
    let g = shadergrad::grad(&loss, &[w])?;
    Tensor::realize_all(&[loss.clone(), g[0].clone()])?;
    Ok((loss.item()?, g[0].to_vec()?))
}

fn layers_on(device: Device) -> (Linear, Linear) {
    with_device(device, || {
        shadergrad::manual_seed(5);
        (
            Linear::new(256, 256, Init::GlorotUniform).expect("small"),
            Linear::new(256, 4, Init::GlorotUniform).expect("small"),
        )
    })
}

#[test]
fn out_of_memory_then_a_smaller_batch_succeeds() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let layers = layers_on(gpu);
    // The weights are resident; 8 MiB more leaves room for batch 64
    // (about 0.3 MB of activations) and none for batch 16384 (about 50 MB).
    with_device(gpu, || step(&layers, 8)).expect("warm-up");
    let cap = gpu.memory_allocated() + (8 << 20);
    gpu.set_memory_limit(Some(cap)).expect("a gpu takes a cap");
    let big = with_device(gpu, || step(&layers, 16384));
    let err = big.expect_err("batch 16384 must not fit in the cap");
    assert!(matches!(err, Error::OutOfMemory(_)), "wrong error: {err}");
    let msg = err.to_string();
    assert!(
        msg.contains("memory limit") && msg.contains("smaller batch"),
        "{msg}"
    );
    assert!(
        gpu.memory_allocated() <= cap,
        "{} bytes held over the {cap}-byte cap",
        gpu.memory_allocated()
    );

    // The same process retries with a smaller batch: same numbers as the cpu.
    let (loss, grad) = with_device(gpu, || step(&layers, 64)).expect("batch 64 fits");
    gpu.set_memory_limit(None).expect("lift the cap");
    let cpu_layers = layers_on(Device::Cpu);
    let (want_loss, want_grad) =
        with_device(Device::Cpu, || step(&cpu_layers, 64)).expect("cpu step");
    common::assert_close(&[loss], &[want_loss], 1e-5, 1e-4);
    common::assert_close(&grad, &want_grad, 1e-6, 1e-3);
}

#[test]
fn limits_and_bindings_are_checked() {
    assert!(Device::Cpu.set_memory_limit(Some(1 << 20)).is_err());
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    // A tensor past the largest storage binding is refused before anything
    // runs (random: arithmetic on a constant folds into a constant).
    let huge = with_device(gpu, || {
        Tensor::rand(&[1 << 20, 1 << 12])
            .add_scalar(1.0)
            .realize()
            .map(drop)
    });
    let err = huge.expect_err("16 GiB is past any binding here");
    assert!(matches!(err, Error::OutOfMemory(_)), "wrong error: {err}");
    assert!(err.to_string().contains("binding"), "{err}");
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    if common::gpu_device().is_none() {
        return;
    }
    // An app-owned device that we can destroy (as a driver reset would).
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("an adapter (the shared device opened one)");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&Default::default())).expect("a second device");
    let d = Device::from_wgpu(device.clone(), queue, adapter.get_info())
        .expect("default limits suffice");
    let run = || {
        with_device(d, || {
            Tensor::from_slice(&[1.0, 2.0], &[2])?
                .add_scalar(1.0)
                .to_vec()
        })
    };
    assert_eq!(run().expect("works before the loss"), vec![2.0, 3.0]);
    device.destroy();
    let err = run().expect_err("a destroyed device cannot run");
    assert!(matches!(err, Error::Device(_)), "wrong error: {err}");
    assert!(err.to_string().contains("lost"), "{err}");
    // Other devices are unaffected.
    assert_eq!(
        with_device(Device::Cpu, run_cpu).expect("cpu"),
        vec![2.0, 3.0]
    );
}

fn run_cpu() -> shadergrad::Result<Vec<f32>> {
    Tensor::from_slice(&[1.0, 2.0], &[2])?
        .add_scalar(1.0)
        .to_vec()
}
