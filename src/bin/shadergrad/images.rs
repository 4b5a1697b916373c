//! `train images`, `predict` and `eval images`: image classifiers on a
//! user's own folders and files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use shadergrad::data::image_folder::{self, BadImages, Fit, FolderOptions, ImageFolder, Split};
use shadergrad::data::ImageDataset;
use shadergrad::models::image::{top_k, ImagePipeline};
use shadergrad::train;
use shadergrad::{with_device, Device, Error, Result};

use crate::{choose_device, print_summary_json, progress, FitArgs};

/// Where the images are and how to read them.
#[derive(Args)]
pub struct FolderArgs {
    /// An image folder (<class>/<image>, or train/<class>/<image> with
    /// optional val/ and test/) or a .tar.gz of one.
    #[arg(long)]
    data: PathBuf,
    /// What to do with a file that does not decode (or is too small to
    /// crop): skip (with a warning naming it) or error.
    #[arg(long, default_value = "skip")]
    bad_images: String,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    folder: FolderArgs,
    /// Input size HxW (or one number for a square); every image is resized to it.
    #[arg(long, default_value = "64x64")]
    size: String,
    /// How other aspect ratios reach --size: crop (cover, then cut the
    /// centre), pad (fit inside, black borders) or stretch.
    #[arg(long, default_value = "crop")]
    fit: String,
    /// Without val/ or test/ folders: the seeded share of each class held out for validation.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f32,
    #[command(flatten)]
    train: FitArgs,
    /// Folder for checkpoint.safetensors, metrics.csv and metrics.png.
    #[arg(long, default_value = "runs/images")]
    out: PathBuf,
}

#[derive(Args)]
pub struct PredictArgs {
    /// A checkpoint of `train images` or `train cifar10`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files, folders (every image directly inside) or quoted glob patterns.
    #[arg(required = true)]
    images: Vec<String>,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// One JSON object per image.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    folder: FolderArgs,
    /// A checkpoint of `train images` or `train cifar10`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Which part of the tree: test, val or train; by default test/, else
    /// val/, else all of it.
    #[arg(long)]
    split: Option<String>,
    /// Folder for confusion.png and misclassified.png.
    #[arg(long, default_value = "runs/eval-images")]
    out: PathBuf,
    /// One JSON line of results.
    #[arg(long)]
    json: bool,
}

fn bad_images(name: &str) -> Result<BadImages> {
    match name {
        "skip" => Ok(BadImages::Skip),
        "error" => Ok(BadImages::Fail),
        _ => Err(Error::param(
            "bad-images",
            format!("{name:?}: use skip or error"),
        )),
    }
}

fn load_folder(args: &FolderArgs, size: (usize, usize), fit: Fit) -> Result<ImageFolder> {
    let opts = FolderOptions {
        size,
        fit,
        bad_images: bad_images(&args.bad_images)?,
    };
    eprintln!("data: {}", args.data.display());
    let folder = image_folder::load(&args.data, &opts)?;
    for line in &folder.skipped {
        eprintln!("warning: skipped {line}");
    }
    Ok(folder)
}

pub fn train(a: TrainArgs) -> Result<()> {
    let device = choose_device(&a.folder.device)?;
    with_device(device, || train_on(a, &device))
}

fn train_on(a: TrainArgs, device: &Device) -> Result<()> {
    let size = image_folder::parse_size(&a.size)?;
    let fit = Fit::parse(&a.fit)?;
    // Check the model fits the size before decoding thousands of images.
    shadergrad::models::build_for(&a.train.model, size, 2)?;
    let mut folder = load_folder(&a.folder, size, fit)?;
    let classes = folder.classes.clone();
    if classes.len() < 2 {
        return Err(Error::Io {
            path: a.folder.data.display().to_string(),
            msg: format!(
                "has one class folder ({:?}); a classifier needs at least two",
                classes[0]
            ),
        });
    }
    let mut train_set = folder
        .take(Split::Train)
        .ok_or_else(|| Error::param("data", "no training images"))?;
    let (val_set, val_name) = match (folder.take(Split::Val), folder.take(Split::Test)) {
        (Some(v), _) => (v, "val/".to_string()),
        (None, Some(t)) => (t, "test/".to_string()),
        (None, None) => {
            let (t, v) =
                image_folder::split_off(&train_set, classes.len(), a.val_fraction, a.train.seed)?;
            train_set = t;
            (
                v,
                format!("{:.0}% of train, seeded", a.val_fraction * 100.0),
            )
        }
    };
    if let Some(n) = a.train.limit_train {
        train_set = train_set.sample(n, a.train.seed);
    }
    let pipeline = ImagePipeline {
        model: a.train.model.clone(),
        size,
        fit,
        classes: classes.clone(),
    };
    if let Some(path) = &a.train.resume {
        check_resume(path, &pipeline)?;
    }
    let mut cfg = a.train.config(a.out.clone(), pipeline.to_metadata());
    // CIFAR's 4-pixel crop padding, in proportion for other sizes.
    if cfg.augment.crop_padding > 0 {
        cfg.augment.crop_padding = (size.0.min(size.1) / 8).max(1);
    }
    shadergrad::manual_seed(cfg.seed);
    let mut model = pipeline.build()?;
    eprintln!(
        "model: {} ({} parameters) for {}x{} images, {} classes ({}), {} train / {} validation ({val_name}) images, batch {}, {} epochs",
        cfg.model,
        shadergrad::nn::parameter_count(&model),
        size.0,
        size.1,
        classes.len(),
        abbreviate(&classes),
        train_set.len(),
        val_set.len(),
        cfg.batch_size,
        cfg.epochs
    );
    let data_name = a
        .folder
        .data
        .file_name()
        .map_or("images".into(), |n| n.to_string_lossy().into_owned());
    let plot = (
        cfg.out.join("metrics.png"),
        format!("{} on {data_name}", cfg.model),
    );
    let mut observer = progress::Progress::new(!a.train.json, plot)?;
    // With --val-fraction 0 and no val/ or test/, there is nothing to
    // evaluate, and no made-up test figures are shown.
    let objective = train::Classification {
        label_smoothing: cfg.label_smoothing,
    };
    let train_source = train::ImageSource::new(Arc::new(train_set), cfg.augment);
    let val_source = (!val_set.is_empty())
        .then(|| train::ImageSource::new(Arc::new(val_set), Default::default()));
    let summary = train::fit(
        &cfg,
        &mut model,
        &train_source,
        val_source.as_ref(),
        &objective,
        &mut observer,
    )?;
    if a.train.json {
        print_summary_json(&cfg, device, &summary);
    }
    Ok(())
}

/// A run resumes only on the data it started with: the same classes in the
/// same order, the same input size and fit (the weights would load, and
/// mean something else, if only the class names differed).
fn check_resume(path: &Path, now: &ImagePipeline) -> Result<()> {
    let ck = shadergrad::io::checkpoint::load(path)?;
    let then = ImagePipeline::from_metadata(&ck.metadata, path)?;
    let mismatch = |what: &str, was: String, is: String| {
        Error::Io {
        path: path.display().to_string(),
        msg: format!(
            "was trained with {what} {was}, but this run has {is}; resume on the same data and flags, or start a new run (another --out)"
        ),
    }
    };
    if then.classes != now.classes {
        return Err(mismatch(
            "classes",
            then.classes.join(", "),
            now.classes.join(", "),
        ));
    }
    if (then.size, then.fit) != (now.size, now.fit) {
        let show =
            |p: &ImagePipeline| format!("--size {}x{} --fit {}", p.size.0, p.size.1, p.fit.name());
        return Err(mismatch("input", show(&then), show(now)));
    }
    Ok(())
}

fn abbreviate(classes: &[String]) -> String {
    if classes.len() <= 8 {
        classes.join(", ")
    } else {
        format!("{}, ...", classes[..6].join(", "))
    }
}

/// The image files that `patterns` name: files as given, the images
/// directly inside a folder (sorted), and glob matches (sorted).
fn expand(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::Io {
                    path: p.clone(),
                    msg: e.to_string(),
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && image_folder::is_image_name(&f.to_string_lossy()))
                .collect();
            inside.sort();
            if inside.is_empty() {
                return Err(Error::Io {
                    path: p.clone(),
                    msg: "is a folder with no .jpg, .jpeg or .png images".into(),
                });
            }
            files.extend(inside);
        } else if path.exists() {
            files.push(path.to_path_buf());
        } else if p.contains(['*', '?', '[']) {
            let matches = glob::glob(p).map_err(|e| {
                Error::param("predict", format!("{p:?} is not a valid glob pattern: {e}"))
            })?;
            let mut found: Vec<PathBuf> = matches
                .filter_map(|m| m.ok())
                .filter(|f| f.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::Io {
                    path: p.clone(),
                    msg: "matches no files".into(),
                });
            }
            files.extend(found);
        } else {
            return Err(Error::Io {
                path: p.clone(),
                msg: "does not exist".into(),
            });
        }
    }
    Ok(files)
}

fn load_model(checkpoint: &Path) -> Result<(ImagePipeline, shadergrad::nn::Sequential)> {
    let ck = shadergrad::io::checkpoint::load(checkpoint)?;
    let pipeline = ImagePipeline::from_metadata(&ck.metadata, checkpoint)?;
    let model = pipeline.build()?;
    ck.restore(&model, checkpoint)?;
    Ok((pipeline, model))
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let device = choose_device(&a.device)?;
    with_device(device, || predict_on(&a))
}

fn predict_on(a: &PredictArgs) -> Result<()> {
    let (pipeline, mut model) = load_model(&a.checkpoint)?;
    let files = expand(&a.images)?;
    // A file that does not load is reported and the others still get
    // their predictions; the exit status says something failed.
    let mut failed = 0;
    let mut loaded = Vec::new();
    for f in &files {
        match pipeline.load_image(f) {
            Ok(img) => loaded.push((f, img)),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let images: Vec<Vec<u8>> = loaded.iter().map(|(_, i)| i.clone()).collect();
    let probs = pipeline.predict(&mut model, &images, a.batch)?;
    for ((file, _), p) in loaded.iter().zip(probs) {
        let best = top_k(&p, a.top.max(1));
        let name = |i: usize| pipeline.classes.get(i).map_or("?", String::as_str);
        if a.json {
            let top: Vec<serde_json::Value> = best
                .iter()
                .map(|&(i, prob)| serde_json::json!({"class": name(i), "probability": (prob as f64 * 1e4).round() / 1e4}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": file.display().to_string(), "top": top})
            );
        } else {
            let ranked: Vec<String> = best
                .iter()
                .map(|&(i, prob)| format!("{} {:.1}%", name(i), prob * 100.0))
                .collect();
            println!("{}\t{}", file.display(), ranked.join(", "));
        }
    }
    if failed > 0 {
        return Err(Error::param(
            "predict",
            format!("{failed} of {} images could not be read", files.len()),
        ));
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let device = choose_device(&a.folder.device)?;
    with_device(device, || eval_on(&a, &device))
}

fn eval_on(a: &EvalArgs, device: &Device) -> Result<()> {
    let (pipeline, mut model) = load_model(&a.checkpoint)?;
    let mut folder = load_folder(&a.folder, pipeline.size, pipeline.fit)?;
    let split = match a.split.as_deref() {
        Some("train") => Split::Train,
        Some("val") => Split::Val,
        Some("test") => Split::Test,
        Some(other) => {
            return Err(Error::param(
                "split",
                format!("{other:?}: use train, val or test"),
            ))
        }
        None => [Split::Test, Split::Val, Split::Train]
            .into_iter()
            .find(|s| folder.split(*s).is_some())
            .unwrap_or(Split::Train),
    };
    let data = folder.take(split).ok_or_else(|| Error::Io {
        path: a.folder.data.display().to_string(),
        msg: format!("has no {}/ images", split.name()),
    })?;
    // The folder's labels number its own classes; the model's, the
    // checkpoint's. Match them by name.
    let unknown: Vec<&String> = folder
        .classes
        .iter()
        .filter(|c| !pipeline.classes.contains(c))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Io {
            path: a.folder.data.display().to_string(),
            msg: format!(
                "has class folders the checkpoint does not know: {}; the checkpoint's classes are {}",
                unknown.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                pipeline.classes.join(", ")
            ),
        });
    }
    let remap: Vec<u8> = folder
        .classes
        .iter()
        .map(|c| pipeline.classes.iter().position(|p| p == c).unwrap_or(0) as u8)
        .collect();
    let data = ImageDataset {
        labels: data.labels.iter().map(|&l| remap[l as usize]).collect(),
        ..data
    };
    let data = Arc::new(data);
    let eval = train::evaluate(&mut model, &data, 256)?;
    let k = pipeline.classes.len();
    println!(
        "model {} on {} ({} images of {}/ in {}): accuracy {:.2}%  loss {:.4}",
        pipeline.model,
        device.describe(),
        data.len(),
        split.name(),
        a.folder.data.display(),
        eval.accuracy * 100.0,
        eval.loss
    );
    println!("confusion matrix (rows: true class, columns: predicted)");
    let short = |c: &str| c.chars().take(7).collect::<String>();
    print!("{:>14}", "");
    for c in &pipeline.classes {
        print!("{:>8}", short(c));
    }
    println!();
    for (i, row) in eval.confusion.iter().take(k).enumerate() {
        print!(
            "{:>14}",
            pipeline.classes[i].chars().take(14).collect::<String>()
        );
        for v in row.iter().take(k) {
            print!("{v:>8}");
        }
        println!();
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Io {
        path: a.out.display().to_string(),
        msg: e.to_string(),
    })?;
    let confusion_png = a.out.join("confusion.png");
    shadergrad::plot::confusion_matrix(
        &eval.confusion,
        &pipeline.classes,
        &format!(
            "{}: {:.2}% on {} {}/ images",
            pipeline.model,
            eval.accuracy * 100.0,
            data.len(),
            split.name()
        ),
        &confusion_png,
    )?;
    // Up to 64 mistakes, taken from each true class in turn (the data is
    // often sorted by class, and the first 64 would all be one class's).
    let il = data.image_len();
    let mut by_class: Vec<std::collections::VecDeque<(usize, usize)>> = vec![Default::default(); k];
    for (i, &pred) in eval.predictions.iter().enumerate() {
        let truth = data.labels[i] as usize;
        if pred != truth && truth < k {
            by_class[truth].push_back((i, pred));
        }
    }
    let name = |c: usize| pipeline.classes.get(c).map_or("?", String::as_str);
    let mut wrong: Vec<(Vec<u8>, String, String)> = Vec::new();
    while wrong.len() < 64 && by_class.iter().any(|q| !q.is_empty()) {
        for q in by_class.iter_mut() {
            if let Some((i, pred)) = q.pop_front().filter(|_| wrong.len() < 64) {
                wrong.push((
                    data.images[i * il..(i + 1) * il].to_vec(),
                    format!("pred: {}", name(pred)),
                    format!("true: {}", name(data.labels[i] as usize)),
                ));
            }
        }
    }
    let grid_png = a.out.join("misclassified.png");
    if !wrong.is_empty() {
        shadergrad::plot::captioned_grid(&wrong, pipeline.size, 8, &grid_png)?;
    }
    eprintln!(
        "wrote {}{}",
        confusion_png.display(),
        if wrong.is_empty() {
            String::new()
        } else {
            format!(
                " and {} ({} mistakes shown)",
                grid_png.display(),
                wrong.len()
            )
        }
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": pipeline.model,
                "images": data.len(),
                "split": split.name(),
                "accuracy": eval.accuracy,
                "loss": eval.loss,
                "classes": pipeline.classes,
                "confusion": eval.confusion.iter().take(k).map(|r| r.iter().take(k).copied().collect::<Vec<_>>()).collect::<Vec<_>>(),
            })
        );
    }
    Ok(())
}
