//! Fuzzing every parser of outside data: CIFAR-10 binary batches and
//! archives, image folders in `.tar.gz`, single image files, `.npy` image
//! arrays, safetensors checkpoints (raw, and with a consistent header so
//! mutations reach the fields), BERT `config.json` and weights, SST-2 TSV
//! and `tokenizer.json`.
//!
//! Stable Rust, no nightly `cargo fuzz`: each target has a seed corpus of
//! valid files made here, a mutator that knows the container (tar headers
//! keep valid checksums, PNG chunks valid CRCs, a safetensors header its
//! length prefix, archives are mutated before gzip), and runs its parser
//! on every mutant. A mutant may be refused, never panic, hang or ask for
//! an unbounded allocation: this binary's allocator refuses any single
//! allocation above 1 GiB (the process aborts, and the input that did it
//! is at `target/tmp/parser-fuzz/last-<target>`), and a watchdog aborts on
//! an input that runs over 60 s. Findings are saved under
//! `target/tmp/parser-fuzz/findings/`; kept in
//! `tests/regressions/parsers/<target>/`, they are replayed by
//! `regression_corpus_never_panics`.
//!
//! Executions per target: 500 here; `SHADERGRAD_FUZZ_EXECS=20000 cargo test
//! --release --test parsers -- --nocapture` runs longer and prints counts.

use shadergrad::data::image_folder::{self, BadImages, Fit, FolderOptions};
use shadergrad::data::{cifar10, image_set, text::TextDataset};
use shadergrad::io::checkpoint;
use shadergrad::models::image::ImagePipeline;
use shadergrad::nn::bert::{Bert, BertConfig};
use shadergrad::nn::{Linear, Module};
use shadergrad::Tensor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most one allocation may ask for; every seed file here is a few KB.
const ALLOC_LIMIT: usize = 1 << 30;

struct Capped;

// SAFETY: forwards to the system allocator; refusing (null) is allowed.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

// ------------------------------------------------------------------ mutation

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const INTERESTING: [u64; 9] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    1 << 60,
    u64::MAX,
];
const NUMBERS: [&str; 8] = [
    "0",
    "-1",
    "1",
    "4294967296",
    "1152921504606846976",
    "99999999999999999999999",
    "1e308",
    "77777777777",
];

/// 1 to 4 random edits: bit flips, interesting bytes and integers, cuts,
/// deleted, doubled and inserted chunks, a digit run replaced by an extreme
/// number (headers, JSON and tar's octal fields are text), splices.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let n = data.len();
        match rng.below(10) {
            // A tar header's size field (octal): the claim an archive
            // reader must not size a buffer by.
            9 if n >= 512 => {
                let headers: Vec<usize> = (0..n / 512)
                    .map(|b| b * 512)
                    .filter(|&at| at + 262 <= n && &data[at + 257..at + 262] == b"ustar")
                    .collect();
                if !headers.is_empty() {
                    let at = headers[rng.below(headers.len())];
                    let v = INTERESTING[rng.below(INTERESTING.len())].min(0o77_777_777_777);
                    data[at + 124..at + 136].copy_from_slice(format!("{v:011o}\0").as_bytes());
                }
            }
            0 if n > 0 => {
                let i = rng.below(n);
                data[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                data[i] = INTERESTING[rng.below(4)] as u8;
            }
            2 if n >= 8 => {
                let i = rng.below(n - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.chance(0.5) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let w = [1, 2, 4, 8][rng.below(4)];
                data[i..i + w].copy_from_slice(&bytes[..w]);
            }
            3 => data.truncate(rng.below(n + 1)),
            4 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(64)).min(n);
                data.drain(a..b);
            }
            5 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(256)).min(n);
                let chunk = data[a..b].to_vec();
                let at = rng.below(n + 1);
                data.splice(at..at, chunk);
            }
            6 => {
                let at = rng.below(n + 1);
                let chunk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, chunk);
            }
            7 => {
                let digits: Vec<usize> = (0..n).filter(|&i| data[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..n).find(|&i| !data[i].is_ascii_digit()).unwrap_or(n);
                    let num = NUMBERS[rng.below(NUMBERS.len())].as_bytes().to_vec();
                    data.splice(start..end, num);
                }
            }
            _ if !other.is_empty() => {
                let a = rng.below(n + 1);
                let b = rng.below(other.len());
                let len = rng.below(other.len() - b + 1);
                data.splice(a..n.min(a + len), other[b..b + len].iter().copied());
            }
            _ => {}
        }
    }
}

/// Recompute every ustar header's checksum, so edits reach the fields.
fn fix_tar(data: &mut [u8]) {
    let mut at = 0;
    while at + 512 <= data.len() {
        let block = &mut data[at..at + 512];
        if &block[257..262] != b"ustar" {
            break;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| b as u32).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
        let size = std::str::from_utf8(&block[124..136])
            .ok()
            .and_then(|s| {
                u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()
            })
            .unwrap_or(0);
        at += 512 + (size.div_ceil(512) * 512).min(data.len() as u64) as usize;
    }
}

/// Recompute every PNG chunk's CRC.
fn fix_png(data: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= data.len() {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let end = at + 8 + len;
        if end + 4 > data.len() {
            break;
        }
        let crc = crc32fast::hash(&data[at + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("in memory");
    gz.finish().expect("in memory")
}

/// Separates a safetensors header's JSON from the tensor bytes in the
/// structured target's inputs.
const SPLIT: &[u8] = b"\n--tensor bytes--\n";

/// A safetensors file from `json SPLIT data`, the prefix matching the JSON.
fn assemble_safetensors(input: &[u8]) -> Vec<u8> {
    let at = input.windows(SPLIT.len()).position(|w| w == SPLIT);
    let (json, data) = match at {
        Some(i) => (&input[..i], &input[i + SPLIT.len()..]),
        None => (input, &[][..]),
    };
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json);
    out.extend_from_slice(data);
    out
}

fn split_safetensors(file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    [&file[8..8 + n], SPLIT, &file[8 + n..]].concat()
}

// ------------------------------------------------------------------ seeds

fn tar(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &bytes[..]).expect("in memory");
    }
    b.into_inner().expect("in memory")
}

fn png(w: u32, h: u32, grey16: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    if grey16 {
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w, h, |x, y| {
            image::Luma([(x * 4000 + y * 300) as u16])
        });
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("in memory");
    } else {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 30) as u8, 90])
        });
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("in memory");
    }
    out.into_inner()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, 90])
    });
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("in memory");
    out.into_inner()
}

/// `n` CIFAR-10 records (label byte + 3072 pixels).
fn cifar_records(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| (p * 7 + i) as u8))
        })
        .collect()
}

const TINY_BERT: &str = r#"{"model_type": "bert", "hidden_act": "gelu", "vocab_size": 30, "hidden_size": 8,
 "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
 "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#;

fn tiny_bert() -> Bert {
    Bert::new(BertConfig::from_json(TINY_BERT, Path::new("config.json")).expect("valid"))
        .expect("small")
}

fn checkpoint_bytes(tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Vec<u8> {
    let dir = tempdir("seed");
    let p = dir.join("seed.safetensors");
    checkpoint::save(&p, tensors, meta).expect("save");
    std::fs::read(&p).expect("read back")
}

const TOKENIZER: &str = r###"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [
 {"id": 0, "special": true, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
 {"id": 1, "special": true, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
 {"id": 2, "special": true, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
 {"id": 3, "special": true, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
 "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
 "pre_tokenizer": {"type": "BertPreTokenizer"},
 "post_processor": {"type": "TemplateProcessing",
   "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
   "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
   "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
 "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
 "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
   "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "film": 5, "is": 6, "good": 7, "bad": 8, "##s": 9, "a": 10}}}"###;

// ------------------------------------------------------------------ targets

/// A parser under test: its seed files and how one input reaches it.
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    /// Turn a (mutated) input into the bytes of the file the parser reads.
    wrap: fn(&[u8]) -> Vec<u8>,
    /// Run the parser on the file at this path (in a fresh folder); any
    /// `Err` is a fine outcome.
    run: fn(&Path, &[u8]) -> shadergrad::Result<()>,
}

fn same(input: &[u8]) -> Vec<u8> {
    input.to_vec()
}

fn write_to(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("temp folder is writable");
    p
}

fn targets() -> Vec<Target> {
    let cifar_tar = tar(&[
        ("cifar-10-batches-bin/data_batch_1.bin", cifar_records(2)),
        ("cifar-10-batches-bin/data_batch_2.bin", cifar_records(1)),
        ("cifar-10-batches-bin/data_batch_3.bin", cifar_records(1)),
        ("cifar-10-batches-bin/data_batch_4.bin", cifar_records(1)),
        ("cifar-10-batches-bin/data_batch_5.bin", cifar_records(1)),
        ("cifar-10-batches-bin/test_batch.bin", cifar_records(2)),
    ]);
    // The JPEG layout: train/<class>/*.png and test/<class>/*.png, ten classes.
    let cifar_images: Vec<(String, Vec<u8>)> = ["train", "test"]
        .iter()
        .flat_map(|split| {
            (0..10).map(move |c| {
                (
                    format!("cifar10/{split}/class{c}/0.png"),
                    png(32, 32, false),
                )
            })
        })
        .collect();
    let cifar_images_tar = tar(&cifar_images
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect::<Vec<_>>());
    let folder_tar = tar(&[
        ("pets/cat/a.png", png(9, 7, false)),
        ("pets/cat/b.jpg", jpeg(10, 10)),
        ("pets/dog/c.png", png(12, 8, true)),
        ("pets/dog/d.png", png(8, 8, false)),
    ]);
    let split_tar = tar(&[
        ("train/cat/a.png", png(8, 8, false)),
        ("train/dog/b.png", png(8, 8, false)),
        ("val/cat/c.png", png(8, 8, false)),
        ("val/dog/d.jpg", jpeg(8, 8)),
    ]);
    let linear = Linear::new(3, 2, shadergrad::nn::init::Init::GlorotUniform).expect("small");
    let named: Vec<(String, Tensor)> = linear
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    let meta: HashMap<String, String> = [
        ("model", "seed-cnn"),
        ("task", "images"),
        ("input_size", "32x32"),
        ("fit", "crop"),
        ("classes", "cat,dog"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let linear_ck = checkpoint_bytes(&named, meta);
    let bert = tiny_bert();
    let bert_named: Vec<(String, Tensor)> = bert
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.get()))
        .collect();
    let bert_ck = checkpoint_bytes(&bert_named, HashMap::new());
    let npy = {
        let dir = tempdir("seed-npy");
        let set = image_set::from_signed_floats(&vec![0.25; 2 * 3 * 8 * 8], 2, 8).expect("valid");
        let p = dir.join("x.npy");
        image_set::save_npy(&set, &p).expect("save");
        std::fs::read(&p).expect("read back")
    };
    #[allow(unused_mut)]
    let mut list = vec![
        Target {
            name: "cifar_bin",
            seeds: vec![cifar_records(2), cifar_records(1)],
            wrap: same,
            run: |dir, bytes| {
                write_to(dir, "data_batch_1.bin", bytes);
                for f in [
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                    "test_batch.bin",
                ] {
                    write_to(dir, f, &cifar_records(1));
                }
                cifar10::load_uncached(dir).map(drop)
            },
        },
        Target {
            name: "cifar_targz",
            seeds: vec![cifar_tar, cifar_images_tar],
            wrap: |t| {
                let mut t = t.to_vec();
                fix_tar(&mut t);
                gzip(&t)
            },
            run: |dir, bytes| {
                cifar10::load_uncached(&write_to(dir, "cifar.tar.gz", bytes)).map(drop)
            },
        },
        Target {
            name: "image_folder_targz",
            seeds: vec![folder_tar, split_tar],
            wrap: |t| {
                let mut t = t.to_vec();
                fix_tar(&mut t);
                gzip(&t)
            },
            run: |dir, bytes| load_folder_archive(dir, bytes, Fit::Pad, BadImages::Skip),
        },
        Target {
            name: "targz_bytes",
            seeds: vec![gzip(&tar(&[
                ("a/x.png", png(8, 8, false)),
                ("b/y.png", png(8, 8, false)),
            ]))],
            wrap: same,
            run: |dir, bytes| load_folder_archive(dir, bytes, Fit::Stretch, BadImages::Fail),
        },
        Target {
            name: "image_file",
            seeds: vec![png(9, 9, false), png(12, 8, true), jpeg(10, 10)],
            wrap: |b| {
                let mut b = b.to_vec();
                fix_png(&mut b);
                b
            },
            run: |_, bytes| {
                image_folder::decode(bytes, (8, 8), Fit::Crop, "fuzz.png")?;
                image_folder::decode(bytes, (6, 10), Fit::Pad, "fuzz.png").map(drop)
            },
        },
        Target {
            name: "npy",
            seeds: vec![npy],
            wrap: same,
            run: |dir, bytes| image_set::load(&write_to(dir, "x.npy", bytes), 8).map(drop),
        },
        Target {
            name: "safetensors_raw",
            seeds: vec![linear_ck.clone(), bert_ck.clone()],
            wrap: same,
            run: run_checkpoint,
        },
        Target {
            name: "safetensors_header",
            seeds: vec![
                split_safetensors(&without_checksum(&linear_ck)),
                split_safetensors(&without_checksum(&bert_ck)),
            ],
            wrap: assemble_safetensors,
            run: run_checkpoint,
        },
        Target {
            name: "bert_weights",
            seeds: vec![split_safetensors(&without_checksum(&bert_ck))],
            wrap: assemble_safetensors,
            run: |dir, bytes| tiny_bert().load_weights(&write_to(dir, "model.safetensors", bytes)),
        },
        Target {
            name: "bert_config",
            seeds: vec![TINY_BERT.as_bytes().to_vec()],
            wrap: same,
            // A model folder: the fuzzed config.json beside the tiny
            // model's (valid) weights.
            run: |dir, bytes| {
                write_to(dir, "config.json", bytes);
                if !dir.join("model.safetensors").is_file() {
                    let bert = tiny_bert();
                    let named: Vec<(String, Tensor)> = bert
                        .parameters()
                        .into_iter()
                        .map(|(n, p)| (n, p.get()))
                        .collect();
                    checkpoint::save(&dir.join("model.safetensors"), &named, HashMap::new())?;
                }
                Bert::from_pretrained(dir).map(drop)
            },
        },
        Target {
            name: "sst2_tsv",
            seeds: vec![
                b"sentence\tlabel\nthe film is good \t1\nit 's bad\t0\n".to_vec(),
                b"label\tsentence\n0\tbad\n1\tgood , really\n".to_vec(),
            ],
            wrap: same,
            run: |dir, bytes| TextDataset::read_tsv(&write_to(dir, "train.tsv", bytes)).map(drop),
        },
    ];
    #[cfg(feature = "text")]
    list.push(Target {
        name: "tokenizer_json",
        seeds: vec![TOKENIZER.as_bytes().to_vec()],
        wrap: same,
        run: |dir, bytes| {
            let p = write_to(dir, "tokenizer.json", bytes);
            let wp = shadergrad::data::wordpiece::WordPiece::from_file(&p)?;
            wp.encode("The films is good, a bad film!", 8, true)?;
            wp.encode("the film", 64, false).map(drop)
        },
    });
    list
}

fn load_folder_archive(
    dir: &Path,
    bytes: &[u8],
    fit: Fit,
    bad_images: BadImages,
) -> shadergrad::Result<()> {
    let opts = FolderOptions {
        size: (8, 8),
        fit,
        bad_images,
    };
    image_folder::load_uncached(&write_to(dir, "images.tar.gz", bytes), &opts).map(drop)
}

fn run_checkpoint(dir: &Path, bytes: &[u8]) -> shadergrad::Result<()> {
    let p = write_to(dir, "model.safetensors", bytes);
    let ck = checkpoint::load(&p)?;
    for name in ck.tensors.keys() {
        if let Some(t) = ck.tensor(name) {
            t?;
        }
    }
    let _ = ImagePipeline::from_metadata(&ck.metadata, &p);
    if ck.tensors.contains_key("weight") {
        let linear = Linear::new(3, 2, shadergrad::nn::init::Init::GlorotUniform)?;
        ck.restore(&linear, &p)
    } else {
        tiny_bert().load_weights(&p)
    }
}

/// The same file without its checksum entry, so that mutated tensor bytes
/// and shapes reach the parser instead of failing the checksum.
fn without_checksum(file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value =
        serde_json::from_slice(&file[8..8 + n]).expect("valid header");
    if let Some(meta) = header
        .get_mut("__metadata__")
        .and_then(|m| m.as_object_mut())
    {
        meta.remove("checksum");
    }
    let json = serde_json::to_vec(&header).expect("serializes");
    [
        &(json.len() as u64).to_le_bytes()[..],
        &json,
        &file[8 + n..],
    ]
    .concat()
}

// ------------------------------------------------------------------ harness

fn tempdir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("parser-fuzz/{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("target/tmp is writable");
    d
}

/// What the watchdog sees: the target now running and since when.
static RUNNING: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);

fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let running = *RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((name, since)) = running {
                if since.elapsed() > Duration::from_secs(60) {
                    eprintln!(
                        "parser target {name} ran over 60 s (a hang); its input is at {}",
                        last_input_path(name).display()
                    );
                    std::process::abort();
                }
            }
        });
    });
}

fn last_input_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("parser-fuzz/last-{name}"))
}

/// How one input went.
enum Outcome {
    Accepted,
    Refused(String),
    Panicked(String),
}

fn execute(t: &Target, file: &[u8], dir: &Path) -> Outcome {
    std::fs::write(last_input_path(t.name), file).expect("target/tmp is writable");
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((t.name, Instant::now()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.run)(dir, file)));
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
    match outcome {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(e)) => Outcome::Refused(e.to_string()),
        Err(p) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
    }
}

#[test]
fn mutated_files_get_errors_never_panics() {
    start_watchdog();
    let execs: usize = std::env::var("SHADERGRAD_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // The parsers' own panics are what we look for; keep the default hook
    // from printing each one (they are reported below).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let findings_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parser-fuzz/findings");
    let mut findings = Vec::new();
    let mut report = Vec::new();
    for t in targets() {
        let dir = tempdir(t.name);
        let started = Instant::now();
        // Every seed must parse: a mutator that only ever feeds refused
        // files would test nothing.
        for (i, seed) in t.seeds.iter().enumerate() {
            match execute(&t, &(t.wrap)(seed), &dir) {
                Outcome::Accepted => {}
                Outcome::Refused(e) => {
                    findings.push(format!("{}: seed {i} is refused: {e}", t.name))
                }
                Outcome::Panicked(p) => {
                    findings.push(format!("{}: seed {i} panicked: {p}", t.name))
                }
            }
        }
        let mut rng = Rng(0x5EED ^ (t.name.len() as u64 * 0x1000_0001));
        let (mut accepted, mut refused) = (0usize, 0usize);
        for exec in 0..execs {
            let seed = &t.seeds[exec % t.seeds.len()];
            let other = &t.seeds[rng.below(t.seeds.len())];
            let mut input = seed.clone();
            mutate(&mut rng, &mut input, other);
            let file = (t.wrap)(&input);
            match execute(&t, &file, &dir) {
                Outcome::Accepted => accepted += 1,
                Outcome::Refused(e) => {
                    refused += 1;
                    // An error must say what it is about.
                    if e.trim().is_empty() {
                        findings.push(format!("{}: an empty error message", t.name));
                    }
                }
                Outcome::Panicked(p) => {
                    std::fs::create_dir_all(findings_dir.join(t.name)).expect("writable");
                    let path = findings_dir.join(t.name).join(format!("exec-{exec}"));
                    std::fs::write(&path, &file).expect("writable");
                    findings.push(format!(
                        "{}: {p} (input saved at {})",
                        t.name,
                        path.display()
                    ));
                }
            }
        }
        report.push(format!(
            "{:<20} {execs} executions in {:.1} s: {accepted} accepted, {refused} refused",
            t.name,
            started.elapsed().as_secs_f64()
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::panic::set_hook(hook);
    println!("{}", report.join("\n"));
    assert!(
        findings.is_empty(),
        "parser findings (copy each input into tests/regressions/parsers/<target>/):\n{}",
        findings.join("\n")
    );
}

#[test]
fn regression_corpus_never_panics() {
    start_watchdog();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions/parsers");
    let targets = targets();
    let mut ran = 0;
    for entry in std::fs::read_dir(&root).expect("the corpus folder exists") {
        let folder = entry.expect("readable").path();
        let name = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(t) = targets.iter().find(|t| t.name == name) else {
            panic!("{}: no parser target of that name", folder.display());
        };
        for file in std::fs::read_dir(&folder).expect("readable") {
            let file = file.expect("readable").path();
            let bytes = std::fs::read(&file).expect("readable");
            let dir = tempdir("regression");
            // Each kept input is one a parser once mishandled.
            if let Outcome::Panicked(p) = execute(t, &bytes, &dir) {
                panic!("{} panicked: {p}", file.display());
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "the regression corpus is empty");
}
