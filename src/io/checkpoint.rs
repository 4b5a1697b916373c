//! Checkpoints as safetensors files: model tensors, optimizer state and
//! string metadata. Written to a temporary file, synced, then renamed, so a
//! crash never leaves a half-written checkpoint under the real name. A CRC-32
//! of the tensors goes into the metadata, so changed bytes are named on load.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::{named_tensors, Module};
use crate::{Error, Result, Tensor};

/// A loaded checkpoint: f32 tensors by name, plus metadata.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Each tensor's shape and values, by name.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// String entries: what wrote the checkpoint and how to rebuild its model.
    pub metadata: HashMap<String, String>,
}

/// The metadata entry holding [`checksum`] of a saved checkpoint's tensors.
const CHECKSUM_KEY: &str = "checksum";

/// CRC-32 over every tensor's name, shape and little-endian bytes, in name
/// order: safetensors notices a truncated file, this notices changed bytes.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut crc = crc32fast::Hasher::new();
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, shape, data) in sorted {
        crc.update(&(name.len() as u64).to_le_bytes());
        crc.update(name.as_bytes());
        for &d in shape {
            crc.update(&(d as u64).to_le_bytes());
        }
        crc.update(data);
    }
    format!("crc32:{:08x}", crc.finalize())
}

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Write `tensors` and `metadata` to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    Tensor::realize_all(&tensors.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>())?;
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data: Vec<u8> = t.to_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((name.clone(), t.shape().to_vec(), data));
    }
    let mut metadata = metadata;
    metadata.insert(
        CHECKSUM_KEY.into(),
        checksum(
            bytes
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
        ),
    );
    let views = bytes
        .iter()
        .map(|(n, s, d)| {
            Ok((
                n.as_str(),
                TensorView::new(Dtype::F32, s.clone(), d).map_err(|e| io_err(path, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let encoded = safetensors::serialize(views, &Some(metadata)).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&encoded).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// The name and shape of every tensor in a safetensors file, from its
/// header alone (the tensor bytes are not read): what a loader checks a
/// model's claimed sizes against before allocating the model.
pub fn tensor_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    use std::io::Read;
    // safetensors refuses headers above 100 MB; so do we, before reading one.
    const MAX_HEADER: u64 = 100 << 20;
    let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| io_err(path, format!("is too short for a safetensors header ({e})")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(io_err(
            path,
            format!("claims a {n}-byte header; it is corrupt or not a safetensors file"),
        ));
    }
    let mut header = Vec::new();
    f.take(n)
        .read_to_end(&mut header)
        .map_err(|e| io_err(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        io_err(
            path,
            format!("has a header that is not JSON ({e}); it may be truncated or corrupt"),
        )
    })?;
    let entries = json
        .as_object()
        .ok_or_else(|| io_err(path, "has a header that is not a JSON object"))?;
    Ok(entries
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(name, v)| {
            let shape = v.get("shape")?.as_array()?;
            let shape: Option<Vec<usize>> = shape
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect();
            Some((name.clone(), shape?))
        })
        .collect())
}

/// Read a checkpoint; f32 tensors are kept, i64 bookkeeping tensors
/// (such as BERT's `position_ids`) are skipped.
///
/// ```
/// use shadergrad::io::checkpoint;
/// use shadergrad::nn::{named_tensors, Init, Linear, Module};
///
/// # fn main() -> shadergrad::Result<()> {
/// let path = std::env::temp_dir().join(format!("sg-doc-ck-{}.safetensors", std::process::id()));
/// let trained = Linear::new(3, 2, Init::GlorotUniform)?;
/// let tensors: Vec<_> = named_tensors(&trained).into_iter().map(|(n, p)| (n, p.get())).collect();
/// let meta = [("model".to_string(), "linear-3-2".to_string())].into();
/// checkpoint::save(&path, &tensors, meta)?;
///
/// // Later, or in another program: the same architecture, then its weights.
/// let ck = checkpoint::load(&path)?;
/// assert_eq!(ck.metadata["model"], "linear-3-2");
/// let fresh = Linear::new(3, 2, Init::GlorotUniform)?;
/// ck.restore(&fresh, &path)?;
/// assert_eq!(fresh.weight.get().to_vec()?, trained.weight.get().to_vec()?);
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        io_err(
            path,
            format!("is not a readable safetensors file ({e:?}); it may be truncated or corrupt"),
        )
    })?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| io_err(path, format!("{e:?}")))?;
    let mut ck = Checkpoint {
        metadata: meta.metadata().clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(stored) = ck.metadata.get(CHECKSUM_KEY) {
        let mut f32_tensors: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() == Dtype::F32)
            .collect();
        f32_tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let actual = checksum(
            f32_tensors
                .iter()
                .map(|(n, v)| (n.as_str(), v.shape(), v.data())),
        );
        if *stored != actual {
            return Err(io_err(
                path,
                format!(
                    "is corrupt: its tensors' checksum is {actual}, but it was saved as {stored}; use an earlier checkpoint or retrain"
                ),
            ));
        }
    }
    for (name, view) in st.tensors() {
        match view.dtype() {
            Dtype::F32 => {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                ck.tensors.insert(name, (view.shape().to_vec(), data));
            }
            Dtype::I64 | Dtype::I32 => {}
            other => {
                return Err(io_err(
                    path,
                    format!("tensor {name} has dtype {other:?}; only f32 is supported"),
                ))
            }
        }
    }
    Ok(ck)
}

impl Checkpoint {
    /// The tensor `name` on the default device, if the checkpoint has it.
    pub fn tensor(&self, name: &str) -> Option<Result<Tensor>> {
        self.tensors
            .get(name)
            .map(|(shape, data)| Tensor::from_slice(data, shape))
    }

    /// Load every parameter and state tensor of `model`, after checking that
    /// names and shapes all match (the error lists every mismatch).
    pub fn restore<M: Module + ?Sized>(&self, model: &M, source: &Path) -> Result<()> {
        self.restore_under(model, "", source)
    }

    /// `restore` from the tensors named `prefix` + the model's names (one
    /// of several models in a checkpoint, e.g. `generator.`).
    pub fn restore_under<M: Module + ?Sized>(
        &self,
        model: &M,
        prefix: &str,
        source: &Path,
    ) -> Result<()> {
        let named: Vec<(String, crate::optim::Parameter)> = named_tensors(model)
            .into_iter()
            .map(|(n, p)| (format!("{prefix}{n}"), p))
            .collect();
        let mut problems = Vec::new();
        for (name, p) in &named {
            match self.tensors.get(name) {
                None => problems.push(format!("{name}: missing from the checkpoint")),
                Some((shape, _)) if *shape != p.shape() => problems.push(format!(
                    "{name}: checkpoint has {shape:?}, model needs {:?}",
                    p.shape()
                )),
                _ => {}
            }
        }
        let model_names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        let ours = |n: &str| n.starts_with(prefix) && !n[prefix.len()..].starts_with("optim.");
        for name in self.tensors.keys().filter(|n| ours(n)) {
            if !model_names.contains(&name.as_str()) {
                problems.push(format!("{name}: in the checkpoint but not in the model"));
            }
        }
        if !problems.is_empty() {
            let model = self
                .metadata
                .get("model")
                .map_or("unknown".to_string(), |m| m.clone());
            return Err(io_err(
                source,
                format!(
                    "does not fit this model (checkpoint model: {model}); mismatched tensors:\n  {}",
                    problems.join("\n  ")
                ),
            ));
        }
        for (name, p) in named {
            if let Some(t) = self.tensor(&name) {
                p.set(t?)?;
            }
        }
        Ok(())
    }
}
