//! `train sst2`, `embed`, `classify`: sentence models.

use std::path::{Path, PathBuf};

use clap::Args;
use shadergrad::data::text::{pad_batch, Sst2, WordVocab};
use shadergrad::models::text::{predict, TextPipeline, TransformerSize};
use shadergrad::nn::bert::{locate_model, Bert};
use shadergrad::nn::Module;
use shadergrad::train::text::{self as text_train, TextSource};
use shadergrad::train::TrainConfig;
use shadergrad::{with_device, Error, Result};

use crate::choose_device;
use crate::progress::Progress;

#[derive(Args)]
pub struct TrainArgs {
    /// transformer (from scratch, word vocabulary) or minilm (pretrained BERT, fine-tuned).
    #[arg(long, default_value = "transformer")]
    model: String,
    /// The pretrained model folder for --model minilm; else $SHADERGRAD_MODEL,
    /// models/all-MiniLM-L6-v2, ../shared/models/all-MiniLM-L6-v2.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// SST-2 folder (train.tsv, dev.tsv); else $SHADERGRAD_SST2, data/sst2, ../shared/data/sst2.
    #[arg(long)]
    data: Option<PathBuf>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Default: 4 (transformer), 1 (minilm).
    #[arg(long)]
    epochs: Option<usize>,
    /// Default: 64 (transformer), 32 (minilm).
    #[arg(long)]
    batch: Option<usize>,
    /// Default: 1e-3 (transformer), 5e-5 (minilm).
    #[arg(long)]
    lr: Option<f32>,
    /// adam, adamw, sgd or gd. Default: adam (transformer), adamw (minilm).
    #[arg(long)]
    optimizer: Option<String>,
    /// constant, step, cosine or one-cycle. Default: cosine.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Default: 0 (transformer), 0.01 (minilm, with adamw).
    #[arg(long)]
    weight_decay: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Tokens per sentence at most (longer ones are cut with a warning).
    /// Default: 64 (transformer, words), 128 (minilm, word pieces).
    #[arg(long)]
    max_len: Option<usize>,
    /// Refuse sentences longer than --max-len instead of cutting them.
    #[arg(long)]
    no_truncate: bool,
    /// The from-scratch Transformer's width, layers, heads.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    /// Words seen fewer times in training are unknown (transformer).
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for checkpoint.safetensors, metrics.csv and metrics.png.
    #[arg(long, default_value = "runs/sst2")]
    out: PathBuf,
    /// Stop at the first op (forward or backward) that makes a NaN or an
    /// infinity, naming it, its shape and its inputs. Slow: every op runs
    /// on its own and is read back.
    #[arg(long)]
    detect_anomaly: bool,
    /// Continue from a checkpoint written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Use a random subset (by --seed) of N training sentences.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use the first N dev sentences.
    #[arg(long)]
    limit_dev: Option<usize>,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// A Hugging Face BERT folder (config.json, model.safetensors,
    /// tokenizer.json); else $SHADERGRAD_MODEL, models/all-MiniLM-L6-v2,
    /// ../shared/models/all-MiniLM-L6-v2.
    #[arg(long)]
    model: Option<PathBuf>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Word pieces per sentence at most (the model card's 256).
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Refuse sentences longer than --max-len instead of cutting them.
    #[arg(long)]
    no_truncate: bool,
    /// The sentences.
    #[arg(required = true)]
    sentences: Vec<String>,
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// A checkpoint written by `train sst2`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Refuse sentences longer than the model's limit instead of cutting them.
    #[arg(long)]
    no_truncate: bool,
    /// One JSON object per sentence.
    #[arg(long)]
    json: bool,
    /// The sentences.
    #[arg(required = true)]
    sentences: Vec<String>,
}

fn warn_truncated(cut: usize, max_len: usize, what: &str) {
    if cut > 0 {
        eprintln!(
            "warning: {cut} {what} longer than {max_len} tokens were cut to {max_len} (--no-truncate refuses them)"
        );
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub fn train(a: TrainArgs) -> Result<()> {
    shadergrad::set_detect_anomaly(a.detect_anomaly);
    let device = choose_device(&a.device)?;
    with_device(device, || train_on(a, &device.describe()))
}

fn train_on(a: TrainArgs, device: &str) -> Result<()> {
    let minilm = match a.model.as_str() {
        "transformer" => false,
        "minilm" | "bert" => true,
        other => {
            return Err(Error::param(
                "train sst2",
                format!("unknown model {other:?}; use transformer or minilm"),
            ))
        }
    };
    let dir = Sst2::locate(a.data.as_deref())?;
    eprintln!("data: {}", dir.display());
    let mut sst2 = Sst2::open(&dir)?;
    if let Some(n) = a.limit_train {
        sst2.train = sst2.train.sample(n, a.seed);
    }
    if let Some(n) = a.limit_dev {
        sst2.dev.sentences.truncate(n);
        sst2.dev.labels.truncate(n);
    }
    let pretrained = if minilm && a.resume.is_none() {
        Some(locate_model(a.pretrained.as_deref())?)
    } else {
        None
    };
    let pipeline = match (&a.resume, &pretrained) {
        (Some(path), _) => {
            let ck = shadergrad::io::checkpoint::load(path)?;
            TextPipeline::from_metadata(&ck.metadata, path)?
        }
        (None, Some(dir)) => {
            eprintln!("pretrained: {}", dir.display());
            TextPipeline::bert(dir, a.max_len.unwrap_or(128))?
        }
        (None, None) => {
            let vocab = WordVocab::build(&sst2.train.sentences, a.min_count, usize::MAX);
            let size = TransformerSize {
                dim: a.dim,
                layers: a.layers,
                heads: a.heads,
                ff_dim: 4 * a.dim,
                dropout: a.dropout,
            };
            TextPipeline::transformer(vocab, size, a.max_len.unwrap_or(64))
        }
    };
    let truncate = !a.no_truncate;
    let (train_ids, cut_train) = pipeline.encode_all(&sst2.train.sentences, truncate)?;
    let (dev_ids, cut_dev) = pipeline.encode_all(&sst2.dev.sentences, truncate)?;
    warn_truncated(cut_train + cut_dev, pipeline.max_len, "sentences");
    let model_name = if pipeline.kind == "bert" {
        "minilm"
    } else {
        "transformer"
    };
    let cfg = TrainConfig {
        model: model_name.into(),
        epochs: a.epochs.unwrap_or(if minilm { 1 } else { 4 }),
        batch_size: a.batch.unwrap_or(if minilm { 32 } else { 64 }),
        lr: a.lr.unwrap_or(if minilm { 5e-5 } else { 1e-3 }),
        optimizer: a
            .optimizer
            .clone()
            .unwrap_or_else(|| if minilm { "adamw" } else { "adam" }.into()),
        schedule: a.schedule.clone(),
        weight_decay: a.weight_decay.unwrap_or(if minilm { 0.01 } else { 0.0 }),
        label_smoothing: a.label_smoothing,
        augment: Default::default(),
        seed: a.seed,
        out: a.out.clone(),
        resume: a.resume.clone(),
        eval_batch: 128,
        metadata: pipeline.to_metadata(),
    };
    shadergrad::manual_seed(cfg.seed);
    let mut model = pipeline.build(pretrained.as_deref())?;
    eprintln!(
        "model: {} ({} parameters, {} tokens at most), {} train / {} dev sentences, batch {}, {} epochs",
        cfg.model,
        shadergrad::nn::parameter_count(model.as_ref()),
        pipeline.max_len,
        train_ids.len(),
        dev_ids.len(),
        cfg.batch_size,
        cfg.epochs
    );
    let train_set = TextSource::new(train_ids, sst2.train.labels.clone());
    let dev_set = TextSource::new(dev_ids, sst2.dev.labels.clone());
    let plot = (
        cfg.out.join("metrics.png"),
        format!("{} on SST-2", cfg.model),
    );
    let mut observer = Progress::new(!a.json, plot)?;
    let summary = text_train::train(&cfg, model.as_mut(), &train_set, &dev_set, &mut observer)?;
    let last = summary.history.last();
    let dev_accuracy = last.map_or(f32::NAN, |m| m.test_accuracy());
    if a.json {
        println!(
            "{{\"model\": \"{}\", \"device\": {}, \"epochs\": {}, \"train_loss\": {}, \"dev_accuracy\": {}, \"sentences_per_sec\": {:.1}, \"seconds\": {:.1}, \"stopped_early\": {}, \"checkpoint\": {}}}",
            cfg.model,
            json_string(device),
            summary.history.len(),
            last.map_or(f32::NAN, |m| m.train_loss()),
            dev_accuracy,
            summary.examples_per_sec,
            summary.seconds,
            summary.stopped_early,
            json_string(&summary.checkpoint.display().to_string())
        );
    } else {
        eprintln!(
            "dev accuracy {:.2}% after {} epochs, {:.0} s; checkpoint {}",
            dev_accuracy * 100.0,
            summary.history.len(),
            summary.seconds,
            summary.checkpoint.display()
        );
    }
    Ok(())
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let device = choose_device(&a.device)?;
    with_device(device, || embed_on(&a))
}

fn embed_on(a: &EmbedArgs) -> Result<()> {
    let dir = locate_model(a.model.as_deref())?;
    let pipeline = TextPipeline::bert(&dir, a.max_len)?;
    let (ids, cut) = pipeline.encode_all(&a.sentences, !a.no_truncate)?;
    warn_truncated(cut, pipeline.max_len, "sentences");
    let mut bert = Bert::from_pretrained(&dir)?;
    bert.set_training(false);
    for v in embeddings(&bert, &ids)? {
        let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
        println!("[{}]", parts.join(", "));
    }
    Ok(())
}

/// Sentence embeddings of encoded sentences, in batches of 32.
fn embeddings(bert: &Bert, ids: &[Vec<i32>]) -> Result<Vec<Vec<f32>>> {
    shadergrad::no_grad(|| {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(32) {
            let refs: Vec<&[i32]> = chunk.iter().map(Vec::as_slice).collect();
            let batch = pad_batch(&refs, &vec![0; chunk.len()])?;
            let e = bert.sentence_embedding(&batch.ids, &batch.mask)?;
            let d = e.shape()[1];
            out.extend(e.to_vec()?.chunks(d).map(<[f32]>::to_vec));
        }
        Ok(out)
    })
}

pub fn classify(a: ClassifyArgs) -> Result<()> {
    let device = choose_device(&a.device)?;
    with_device(device, || classify_on(&a))
}

fn classify_on(a: &ClassifyArgs) -> Result<()> {
    let path: &Path = &a.checkpoint;
    let ck = shadergrad::io::checkpoint::load(path)?;
    let pipeline = TextPipeline::from_metadata(&ck.metadata, path)?;
    let mut model = pipeline.build(None)?;
    ck.restore(model.as_ref(), path)?;
    let (ids, cut) = pipeline.encode_all(&a.sentences, !a.no_truncate)?;
    warn_truncated(cut, pipeline.max_len, "sentences");
    let probs = predict(model.as_mut(), &ids, 32)?;
    for (sentence, p) in a.sentences.iter().zip(probs) {
        let (best, prob) =
            p.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        let label = pipeline.classes.get(best).map_or("?", String::as_str);
        if a.json {
            println!(
                "{{\"sentence\": {}, \"label\": {}, \"probability\": {prob:.4}}}",
                json_string(sentence),
                json_string(label)
            );
        } else {
            println!("{label}\t{prob:.4}\t{sentence}");
        }
    }
    Ok(())
}
