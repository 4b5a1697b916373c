//! The pretrained BERT path: WordPiece ids and MiniLM sentence embeddings
//! against Hugging Face `transformers` (values written by
//! tests/data/minilm_reference.py), bad model folders and tokenizer input,
//! and a sentence classifier that trains, saves and reloads.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shadergrad::data::text::{pad_batch, WordVocab};
use shadergrad::data::wordpiece::WordPiece;
use shadergrad::io::checkpoint;
use shadergrad::models::text::{predict, TextPipeline, TransformerSize};
use shadergrad::nn::bert::{Bert, BertConfig};
use shadergrad::nn::Module;
use shadergrad::train::text::{self as text_train, TextSource};
use shadergrad::train::{Quiet, TrainConfig};
use shadergrad::{Error, Result, Tensor};

/// The shared MiniLM folder (skipped with a note when absent).
fn minilm() -> Option<PathBuf> {
    let dir = std::env::var_os("SHADERGRAD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/models/all-MiniLM-L6-v2"));
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!("skipping: MiniLM not found at {}", dir.display());
        None
    }
}

struct Reference {
    text: String,
    ids: Vec<i32>,
    embedding: Vec<f32>,
    cls_hidden: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let text = include_str!("data/minilm_reference.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("reference JSON");
    let floats = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array()
            .expect("array")
            .iter()
            .map(|f| f.as_f64().expect("number") as f32)
            .collect()
    };
    v["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().expect("text").to_string(),
            ids: s["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_i64().expect("id") as i32)
                .collect(),
            embedding: floats(&s["embedding"]),
            cls_hidden: floats(&s["cls_hidden"]),
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn wordpiece_ids_match_hugging_face() -> Result<()> {
    let Some(dir) = minilm() else { return Ok(()) };
    let wp = WordPiece::from_file(&dir)?;
    for r in reference() {
        assert_eq!(wp.encode(&r.text, 256, false)?.ids, r.ids, "{:?}", r.text);
    }
    assert_eq!(wp.token_id("[PAD]"), Some(0));
    Ok(())
}

/// Embeddings of `sentences` (reference indices), padded into one batch.
fn check_embeddings(bert: &Bert, refs: &[&Reference]) -> Result<()> {
    let ids: Vec<&[i32]> = refs.iter().map(|r| r.ids.as_slice()).collect();
    let batch = pad_batch(&ids, &vec![0; refs.len()])?;
    let hidden = bert.encode(&batch.ids, Some(&batch.mask))?;
    let emb = bert.sentence_embedding(&batch.ids, &batch.mask)?.to_vec()?;
    let hidden = hidden.to_vec()?;
    let (len, d) = (batch.ids.shape()[1], 384);
    for (k, r) in refs.iter().enumerate() {
        let got = &emb[k * d..(k + 1) * d];
        let diff = max_abs_diff(got, &r.embedding);
        assert!(diff < 1e-4, "{:?}: embedding differs by {diff}", r.text);
        let cls = &hidden[k * len * d..][..d];
        let diff = max_abs_diff(cls, &r.cls_hidden);
        assert!(
            diff < 1e-3,
            "{:?}: [CLS] hidden state differs by {diff}",
            r.text
        );
    }
    Ok(())
}

/// Every reference sentence in one padded batch (padding must not leak
/// into any sentence's result), on the cpu backend.
#[test]
fn minilm_embeddings_match_transformers() -> Result<()> {
    let Some(dir) = minilm() else { return Ok(()) };
    shadergrad::with_device(shadergrad::Device::Cpu, || {
        let mut bert = Bert::from_pretrained(&dir)?;
        bert.set_training(false);
        let all = reference();
        check_embeddings(&bert, &all.iter().collect::<Vec<_>>())?;
        // Alone, unpadded, through `forward`.
        let r = &all[1];
        let ids = Tensor::from_slice_i32(&r.ids, &[1, r.ids.len()])?;
        let cls = bert.forward(&ids)?.slice(1, 0, 1)?.to_vec()?;
        assert!(max_abs_diff(&cls, &r.cls_hidden) < 1e-3);
        Ok(())
    })
}

/// Two short sentences (one padded) on the gpu arm: the fused attention
/// kernel and everything else of the encoder in WGSL.
fn minilm_short_sentences() -> Result<()> {
    let Some(dir) = minilm() else { return Ok(()) };
    let mut bert = Bert::from_pretrained(&dir)?;
    bert.set_training(false);
    let all = reference();
    check_embeddings(&bert, &[&all[0], &all[3]])
}

backend_tests!(minilm_short_sentences);

/// A tiny random BERT written as a Hugging Face folder (optionally with a
/// tensor left out or replaced).
fn tiny_bert_folder(dir: &Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) -> Result<BertConfig> {
    std::fs::create_dir_all(dir).expect("temp dir");
    let config_json = r#"{"model_type": "bert", "hidden_act": "gelu", "vocab_size": 20,
        "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 12, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12}"#;
    std::fs::write(dir.join("config.json"), config_json).expect("write config");
    let config = BertConfig::from_json(config_json, &dir.join("config.json"))?;
    let bert = Bert::new(config.clone())?;
    let mut tensors: Vec<(String, Tensor)> = bert
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    edit(&mut tensors);
    checkpoint::save(&dir.join("model.safetensors"), &tensors, HashMap::new())?;
    Ok(config)
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn bad_model_folders_name_the_problem() -> Result<()> {
    let root = std::env::temp_dir().join(format!("sg-bert-{}", std::process::id()));
    // A complete folder loads, and its weights are the saved ones.
    let ok = root.join("ok");
    tiny_bert_folder(&ok, |_| {})?;
    let loaded = Bert::from_pretrained(&ok)?;
    assert_eq!(loaded.parameters().len(), 5 + 2 * 16 + 2);
    // A missing tensor is named.
    let missing = root.join("missing");
    tiny_bert_folder(&missing, |t| {
        t.retain(|(n, _)| n != "encoder.layer.1.attention.self.key.weight")
    })?;
    let e = message(
        Bert::from_pretrained(&missing)
            .err()
            .expect("missing tensor"),
    );
    assert!(
        e.contains("encoder.layer.1.attention.self.key.weight") && e.contains("missing"),
        "{e}"
    );
    // A misshaped tensor is named with both shapes.
    let misshaped = root.join("misshaped");
    tiny_bert_folder(&misshaped, |t| {
        for (n, v) in t.iter_mut() {
            if n == "encoder.layer.0.intermediate.dense.weight" {
                *v = Tensor::zeros(&[15, 8]);
            }
        }
    })?;
    let e = message(Bert::from_pretrained(&misshaped).err().expect("misshaped"));
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[15, 8]"),
        "{e}"
    );
    // A `BertFor...` file (prefixed names, with a head) loads its encoder.
    let prefixed = root.join("prefixed");
    tiny_bert_folder(&prefixed, |t| {
        for (n, _) in t.iter_mut() {
            *n = format!("bert.{n}");
        }
        t.push(("classifier.weight".into(), Tensor::zeros(&[2, 8])));
    })?;
    Bert::from_pretrained(&prefixed)?;
    // No weights, no config, a config of another architecture.
    std::fs::remove_file(ok.join("model.safetensors")).expect("remove");
    let e = message(Bert::from_pretrained(&ok).err().expect("no weights"));
    assert!(e.contains("model.safetensors"), "{e}");
    let e = message(
        Bert::from_pretrained(&root.join("nothing"))
            .err()
            .expect("no folder"),
    );
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(
        ok.join("config.json"),
        r#"{"model_type": "gpt2", "vocab_size": 5}"#,
    )
    .expect("write");
    let e = message(Bert::from_pretrained(&ok).err().expect("gpt2"));
    assert!(e.contains("gpt2"), "{e}");
    // Truncated weights.
    let bytes = std::fs::read(missing.join("model.safetensors")).expect("read");
    std::fs::write(missing.join("model.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let e = message(Bert::from_pretrained(&missing).err().expect("truncated"));
    assert!(e.contains("truncated or corrupt"), "{e}");
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn tokenizer_input_errors() -> Result<()> {
    let root = std::env::temp_dir().join(format!("sg-tok-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    // Unknown formats: not JSON, and JSON that is no tokenizer.
    for (name, text) in [("a.json", "vocab line\n"), ("b.json", r#"{"foo": 1}"#)] {
        std::fs::write(root.join(name), text).expect("write");
        let e = message(
            WordPiece::from_file(&root.join(name))
                .err()
                .expect("bad tokenizer"),
        );
        assert!(e.contains(name) && e.contains("tokenizer format"), "{e}");
    }
    let e = message(
        WordPiece::from_file(&root.join("absent"))
            .err()
            .expect("absent"),
    );
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&root).ok();

    let Some(dir) = minilm() else { return Ok(()) };
    let pipeline = TextPipeline::bert(&dir, 6)?;
    let long = "one two three four five six seven";
    // Cut to 6 with [CLS] first and [SEP] last, and said so.
    let e = pipeline.encode(long, true)?;
    assert_eq!(e.ids.len(), 6);
    assert_eq!((e.ids[0], e.ids[5]), (101, 102));
    assert_eq!(e.truncated_from, Some(9));
    let err = message(pipeline.encode(long, false).expect_err("too long"));
    assert!(err.contains("9 tokens") && err.contains("6"), "{err}");
    let err = message(
        pipeline
            .encode_all(&["fine".into(), "  ".into()], true)
            .expect_err("empty"),
    );
    assert!(err.contains("sentence 2") && err.contains("empty"), "{err}");
    Ok(())
}

/// A from-scratch Transformer learns a word-level sentiment rule on the
/// loop `train sst2` uses; its checkpoint rebuilds the same classifier from
/// metadata alone.
#[test]
fn sentence_classifier_trains_and_reloads() -> Result<()> {
    shadergrad::with_device(shadergrad::Device::Cpu, || {
        let words = [
            "film", "plot", "actors", "story", "music", "the", "a", "was", "is",
        ];
        let mut rng = 7u64;
        let mut next = |n: usize| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as usize % n
        };
        let mut make = |n: usize| {
            let (mut sentences, mut labels) = (vec![], vec![]);
            for _ in 0..n {
                let len = 3 + next(6);
                let mut s: Vec<&str> = (0..len).map(|_| words[next(words.len())]).collect();
                let positive = next(2) == 1;
                s.insert(next(len), if positive { "great" } else { "dull" });
                sentences.push(s.join(" "));
                labels.push(positive as i32);
            }
            (sentences, labels)
        };
        let (train_s, train_y) = make(512);
        let (dev_s, dev_y) = make(128);
        let vocab = WordVocab::build(&train_s, 1, 100);
        let size = TransformerSize {
            dim: 16,
            layers: 1,
            heads: 2,
            ff_dim: 32,
            dropout: 0.0,
        };
        let pipeline = TextPipeline::transformer(vocab, size, 16);
        let (train_ids, _) = pipeline.encode_all(&train_s, true)?;
        let (dev_ids, _) = pipeline.encode_all(&dev_s, true)?;
        let out = std::env::temp_dir().join(format!("sg-sst-{}", std::process::id()));
        let mut cfg = TrainConfig::seed_cnn(out.clone());
        cfg.model = "transformer".into();
        cfg.epochs = 6;
        cfg.lr = 3e-3;
        cfg.metadata = pipeline.to_metadata();
        let mut model = pipeline.build(None)?;
        let summary = text_train::train(
            &cfg,
            model.as_mut(),
            &TextSource::new(train_ids, train_y),
            &TextSource::new(dev_ids.clone(), dev_y.clone()),
            &mut Quiet,
        )?;
        let acc = summary.history.last().expect("epochs").test_accuracy();
        assert!(acc >= 0.95, "dev accuracy {acc}");

        let ck = checkpoint::load(&summary.checkpoint)?;
        let again = TextPipeline::from_metadata(&ck.metadata, &summary.checkpoint)?;
        assert_eq!(again.classes, ["negative", "positive"]);
        let mut reloaded = again.build(None)?;
        ck.restore(reloaded.as_ref(), &summary.checkpoint)?;
        let p1 = predict(model.as_mut(), &dev_ids, 50)?;
        let p2 = predict(reloaded.as_mut(), &dev_ids, 50)?;
        assert_eq!(p1, p2);
        let (ids, _) =
            again.encode_all(&["the plot was great".into(), "dull music".into()], false)?;
        let p = predict(reloaded.as_mut(), &ids, 2)?;
        assert!(p[0][1] > 0.9 && p[1][0] > 0.9, "{p:?}");
        std::fs::remove_dir_all(&out).ok();
        Ok(())
    })
}
