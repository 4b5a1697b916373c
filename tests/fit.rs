//! The training loop is generic: a data source and an objective of the
//! caller's own (here a regression on rows of numbers, scored by mean
//! squared error and mean absolute error) train any module.

mod common;
use common::*;
use shadergrad::nn::{Init, Linear, Module};
use shadergrad::train::{self, DataSource, EpochPlan, Objective, StepOutput, TrainConfig};
use shadergrad::{Result, Tensor};

/// y = x . [1, -2, 0.5] + 0.25, as rows of (x, y).
struct Rows {
    x: Vec<[f32; 3]>,
}

impl Rows {
    fn target(x: &[f32; 3]) -> f32 {
        x[0] - 2.0 * x[1] + 0.5 * x[2] + 0.25
    }
}

impl DataSource for Rows {
    type Batch = (Tensor, Tensor);

    fn len(&self) -> usize {
        self.x.len()
    }

    fn batches(&self, plan: EpochPlan) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let n = self.x.len();
        // A seeded rotation stands in for a shuffle.
        let shift = if plan.shuffle {
            (plan.seed + plan.epoch * 7) as usize % n
        } else {
            0
        };
        let starts = (plan.start * plan.batch_size..n).step_by(plan.batch_size);
        Box::new(starts.map(move |s| {
            let rows: Vec<[f32; 3]> = (s..(s + plan.batch_size).min(n))
                .map(|i| self.x[(i + shift) % n])
                .collect();
            let y: Vec<f32> = rows.iter().map(Rows::target).collect();
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            Ok((
                Tensor::from_vec(flat, &[rows.len(), 3])?,
                Tensor::from_vec(y, &[rows.len(), 1])?,
            ))
        }))
    }

    fn batch_len(&self, batch: &Self::Batch) -> usize {
        batch.0.shape()[0]
    }
}

struct Regression;

impl<M: Module + ?Sized> Objective<M, (Tensor, Tensor)> for Regression {
    fn metrics(&self) -> Vec<&'static str> {
        vec!["abs_error"]
    }

    fn forward(&self, model: &M, (x, y): &(Tensor, Tensor)) -> Result<StepOutput> {
        let pred = model.forward(x)?;
        let err = pred.sub(y)?;
        Ok(StepOutput {
            loss: err.square().mean_all(),
            metrics: vec![err.abs().sum_all()],
        })
    }
}

fn a_custom_source_and_objective_train() -> Result<()> {
    shadergrad::manual_seed(3);
    let x: Vec<[f32; 3]> = data(3 * 96, 5)
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let (train_rows, test_rows) = (
        Rows {
            x: x[..64].to_vec(),
        },
        Rows {
            x: x[64..].to_vec(),
        },
    );
    let out = std::env::temp_dir().join(format!(
        "shadergrad-fit-{}-{}",
        std::process::id(),
        shadergrad::default_device()
    ));
    let mut cfg = TrainConfig::seed_cnn(out.clone());
    cfg.model = "linear".into();
    cfg.epochs = 30;
    cfg.batch_size = 8;
    cfg.lr = 0.05;
    cfg.eval_batch = 16;
    let mut model = Linear::new(3, 1, Init::GlorotUniform)?;
    let s = train::fit(
        &cfg,
        &mut model,
        &train_rows,
        Some(&test_rows),
        &Regression,
        &mut train::Quiet,
    )?;
    let (first, last) = (&s.history[0], &s.history[29]);
    assert!(
        last.test_loss() < 1e-3,
        "test mse {} -> {}",
        first.test_loss(),
        last.test_loss()
    );
    assert!(last.test_metric("abs_error") < 0.03, "{last:?}");
    // The custom figures reach the CSV under their own names.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).expect("metrics.csv");
    assert!(
        csv.starts_with(
            "epoch,train_loss,train_abs_error,test_loss,test_abs_error,examples_per_sec"
        ),
        "{csv}"
    );
    assert_eq!(train::parse_metrics_csv(&csv).len(), 30);
    let w = model.weight.get().to_vec()?;
    assert_close(&w, &[1.0, -2.0, 0.5], 0.05, 0.0);
    Ok(())
}

backend_tests!(a_custom_source_and_objective_train);

/// A checkpoint carries a checksum of its tensors: one changed byte in the
/// data, or a cut file, is an error naming the file; an intact one loads.
#[test]
fn corrupt_checkpoints_are_named() {
    use shadergrad::io::checkpoint;
    let dir = std::env::temp_dir().join(format!("sg-fit-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ck.safetensors");
    let tensors = vec![
        (
            "b".to_string(),
            Tensor::from_slice(&[1.0, 2.0, 3.0], &[3]).expect("b"),
        ),
        (
            "a".to_string(),
            Tensor::from_slice(&[4.0; 6], &[2, 3]).expect("a"),
        ),
    ];
    checkpoint::save(&path, &tensors, Default::default()).expect("save");
    let ck = checkpoint::load(&path).expect("an intact checkpoint loads");
    assert!(ck.metadata["checksum"].starts_with("crc32:"));
    assert_eq!(ck.tensors["b"].1, vec![1.0, 2.0, 3.0]);

    let good = std::fs::read(&path).expect("read");
    // The last byte is tensor data: flip one bit.
    let mut flipped = good.clone();
    *flipped.last_mut().expect("bytes") ^= 0x10;
    std::fs::write(&path, &flipped).expect("write");
    let msg = checkpoint::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("ck.safetensors") && msg.contains("is corrupt") && msg.contains("checksum"),
        "{msg}"
    );
    // A cut file.
    std::fs::write(&path, &good[..good.len() - 5]).expect("write");
    let msg = checkpoint::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("ck.safetensors") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Regression whose loss turns NaN at one step (a stand-in for a diverging run).
struct NanAtStep {
    step: usize,
    calls: std::cell::Cell<usize>,
}

impl<M: Module + ?Sized> Objective<M, (Tensor, Tensor)> for NanAtStep {
    fn metrics(&self) -> Vec<&'static str> {
        vec!["abs_error"]
    }

    fn forward(&self, model: &M, batch: &(Tensor, Tensor)) -> Result<StepOutput> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let out = Regression.forward(model, batch)?;
        let loss = if call == self.step {
            out.loss.mul_scalar(f32::NAN)
        } else {
            out.loss
        };
        Ok(StepOutput {
            loss,
            metrics: out.metrics,
        })
    }
}

/// A non-finite loss stops training with its step, and the last good
/// checkpoint (the end of epoch 1) stays, loads, and holds finite weights.
#[test]
fn a_nan_loss_stops_with_its_step_and_keeps_the_checkpoint() {
    use shadergrad::io::checkpoint;
    let rows = Rows {
        x: data(3 * 64, 9)
            .chunks(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect(),
    };
    let out = std::env::temp_dir().join(format!("shadergrad-fit-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cfg = TrainConfig::seed_cnn(out.clone());
    cfg.model = "linear".into();
    cfg.epochs = 5;
    cfg.batch_size = 8; // 8 steps per epoch
    cfg.lr = 0.05;
    let mut model = Linear::new(3, 1, Init::GlorotUniform).expect("small");
    let objective = NanAtStep {
        step: 12,
        calls: Default::default(),
    };
    let err = train::fit(&cfg, &mut model, &rows, None, &objective, &mut train::Quiet)
        .expect_err("the NaN loss stops the run");
    let msg = err.to_string();
    assert!(matches!(err, shadergrad::Error::NonFinite(_)), "{msg}");
    assert!(msg.contains("step 13 (epoch 2, batch 5 of 8)"), "{msg}");
    assert!(msg.contains("the last good checkpoint"), "{msg}");
    let ck = checkpoint::load(&out.join("checkpoint.safetensors")).expect("the checkpoint loads");
    assert_eq!(
        ck.metadata["epoch"], "1",
        "the end of epoch 1 is what is kept"
    );
    assert!(ck
        .tensors
        .values()
        .all(|(_, v)| v.iter().all(|x| x.is_finite())));
    // The model itself was left at its last finite values.
    assert!(model
        .weight
        .get()
        .to_vec()
        .expect("read")
        .iter()
        .all(|x| x.is_finite()));
}
