//! Checkpoints: variables (and optimizer state) saved to and restored from
//! [safetensors](https://github.com/huggingface/safetensors) files.
//!
//! safetensors is a simple open format (an 8-byte header length, a JSON header
//! naming each tensor's dtype, shape and byte range, then the raw little-endian
//! data) read by NumPy (`safetensors.numpy.load_file`), PyTorch and others, with a
//! parser hardened against malicious files. adgraph writes and reads `F32`
//! tensors only.
//!
//! - [`Graph::save_variables`] / [`Graph::restore_variables`]: a graph's variables,
//!   one tensor per variable, named as the variable. A restore is
//!   [`RestoreMode::Strict`] (everything must match, or nothing is restored and one
//!   error lists every problem) or [`RestoreMode::Partial`] (what matches is
//!   restored, the rest is listed in the returned [`RestoreReport`]).
//! - [`Graph::save_training_state`] / [`Graph::restore_training_state`]: all
//!   variables, the optimizer's [state](crate::optim::Optimizer::state) (tensors
//!   named `optimizer/<kind>/...`, e.g. `optimizer/adam/m/Variable_0`) and string
//!   metadata (e.g. the epoch or the position in the data) in one file, to resume
//!   training exactly.
//! - [`Checkpoint`]: the file's contents in memory (named tensors and string
//!   metadata), with [`save`](Checkpoint::save) and [`load`](Checkpoint::load).
//!
//! Variables are named `Variable`, `Variable_0`, ... and no variable name contains
//! a `/`, so variable tensors never collide with the `optimizer/` namespace.
//!
//! Saving is atomic: the file is written to a temporary file in the same
//! directory, flushed and synced to disk, then renamed over the target, so a crash
//! or an error while saving leaves any previous file whole. Loading checks the
//! file (size, header, offsets, dtype, shapes) before it allocates for its data,
//! and reports a bad file as [`Error::Checkpoint`], never by panicking.
//!
//! ```
//! use adgraph as ad;
//! use ad::checkpoint::RestoreMode;
//!
//! let dir = std::env::temp_dir().join(format!("adgraph-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//!
//! let g = ad::Graph::with_seed(1);
//! let w = g.variable(&[3, 2], ad::init::GlorotUniform::new(), true).unwrap();
//! g.save_variables(&path, false).unwrap();
//!
//! let g2 = ad::Graph::with_seed(2); // built the same way, other values
//! let w2 = g2.variable(&[3, 2], ad::init::GlorotUniform::new(), true).unwrap();
//! let report = g2.restore_variables(&path, RestoreMode::Strict).unwrap();
//! assert_eq!(report.restored, vec!["Variable".to_string()]);
//! assert_eq!(g2.variable_value(&w2).unwrap(), g.variable_value(&w).unwrap());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// Prefix of the optimizer-state tensors in a training checkpoint.
pub const OPTIMIZER_PREFIX: &str = "optimizer/";

/// The largest JSON header accepted (the safetensors crate's own limit: 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The name used in errors about a checkpoint not read from or written to a file.
const IN_MEMORY: &str = "(in memory)";

/// The header key safetensors reserves for metadata; no tensor may have it.
const METADATA_KEY: &str = "__metadata__";

/// Named `f32` tensors and string metadata: the contents of a safetensors file.
///
/// Tensors are kept sorted by name. Build one with [`insert`](Checkpoint::insert)
/// (or fill the public maps), then [`save`](Checkpoint::save) it; read one with
/// [`load`](Checkpoint::load).
///
/// ```
/// use adgraph::checkpoint::Checkpoint;
/// let mut ckpt = Checkpoint::new();
/// ckpt.insert("w", adgraph::tensor([[1.0, 2.0], [3.0, 4.0]])).unwrap();
/// ckpt.metadata.insert("epoch".into(), "3".into());
/// let back = Checkpoint::from_bytes(&ckpt.to_bytes().unwrap()).unwrap();
/// assert_eq!(back, ckpt);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// The tensors, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// String metadata (the safetensors header's `__metadata__`).
    pub metadata: BTreeMap<String, String>,
}

/// A tensor's little-endian bytes, for the safetensors writer.
struct F32View<'a> {
    tensor: &'a Tensor,
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // `iter` walks the logical row-major order whatever the memory layout.
        Cow::Owned(self.tensor.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.tensor.len() * std::mem::size_of::<f32>()
    }
}

fn checkpoint_error(path: &str, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_string(),
        message: message.into(),
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("a tensor name must not be empty".into());
    }
    if name == METADATA_KEY {
        return Err(format!(
            "{METADATA_KEY:?} is reserved by safetensors for metadata"
        ));
    }
    Ok(())
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Checkpoint::default()
    }

    /// Adds a tensor.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when a tensor of this name is already there, or the
    /// name is empty or `__metadata__`.
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor) -> Result<()> {
        let name = name.into();
        check_name(&name).map_err(|m| checkpoint_error(IN_MEMORY, m))?;
        if self.tensors.contains_key(&name) {
            return Err(checkpoint_error(
                IN_MEMORY,
                format!("two tensors named {name:?}"),
            ));
        }
        self.tensors.insert(name, value);
        Ok(())
    }

    /// The tensor of this name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The checkpoint in the safetensors format.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for an empty or reserved tensor name, or a header
    /// over [`MAX_HEADER_BYTES`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialize().map_err(|m| checkpoint_error(IN_MEMORY, m))
    }

    fn serialize(&self) -> std::result::Result<Vec<u8>, String> {
        for name in self.tensors.keys() {
            check_name(name)?;
        }
        let metadata = if self.metadata.is_empty() {
            None
        } else {
            Some(self.metadata.clone().into_iter().collect())
        };
        let views = self
            .tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), F32View { tensor }));
        safetensors::serialize(views, metadata).map_err(|e| format!("cannot serialize: {e}"))
    }

    /// Reads a checkpoint from the bytes of a safetensors file.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the bytes are not a valid safetensors file
    /// (bad or oversized header, offsets not covering the data exactly, ...) or
    /// hold a tensor whose dtype is not `F32`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes).map_err(|m| checkpoint_error(IN_MEMORY, m))
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let len = bytes.len() as u64;
        let head: [u8; 8] = match bytes.get(..8).map(<[u8; 8]>::try_from) {
            Some(Ok(head)) => head,
            _ => return Err(too_short(len)),
        };
        let header_len = u64::from_le_bytes(head);
        check_header_length(header_len, len)?;
        let data_len = len - 8 - header_len;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| invalid_file(&e, data_len))?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| invalid_file(&e, data_len))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor {name:?} has dtype {}; adgraph reads F32 tensors only",
                    view.dtype()
                ));
            }
            let count = view
                .shape()
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| format!("tensor {name:?}: shape {:?} overflows", view.shape()))?;
            let data = view.data();
            if count.checked_mul(4) != Some(data.len()) {
                return Err(format!(
                    "tensor {name:?}: shape {:?} needs {count} values, but it has {} bytes",
                    view.shape(),
                    data.len()
                ));
            }
            let values: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let tensor = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
                .map_err(|e| format!("tensor {name:?}: {e}"))?;
            tensors.insert(name.to_string(), tensor);
        }
        let metadata = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Checkpoint { tensors, metadata })
    }

    /// Writes the checkpoint to `path` atomically: to a temporary file in the same
    /// directory, flushed and synced, then renamed over `path`. On error the
    /// previous file at `path`, if any, is untouched and the temporary file removed.
    /// (A symbolic link at `path` is replaced by the file, not followed.)
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for an invalid tensor name; [`Error::Io`] when the
    /// file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self
            .serialize()
            .map_err(|m| checkpoint_error(&path.display().to_string(), m))?;
        write_atomic(path, |file| file.write_all(&bytes)).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: format!("cannot save checkpoint: {e}"),
        })
    }

    /// Reads a checkpoint from a safetensors file.
    ///
    /// The header's declared length is checked against the file's size before
    /// the file is read, so a corrupt or hostile header cannot make it allocate
    /// more than the file holds.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; [`Error::Checkpoint`]
    /// when it is not a valid safetensors file of `F32` tensors: too short,
    /// truncated, a header over [`MAX_HEADER_BYTES`] or not valid JSON, offsets
    /// that do not cover the data exactly, a shape that does not fit its data, a
    /// dtype other than `F32`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = read_checked(path, &name)?;
        Self::parse(&bytes).map_err(|m| checkpoint_error(&name, m))
    }
}

/// The message for a file of `len < 8` bytes.
fn too_short(len: u64) -> String {
    format!("{len} bytes is too short for a safetensors file (at least 8)")
}

/// Checks the header length a file of `len >= 8` bytes declares, before
/// anything is allocated for it: within [`MAX_HEADER_BYTES`] and the file.
fn check_header_length(header_len: u64, len: u64) -> std::result::Result<(), String> {
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        ));
    }
    if header_len > len - 8 {
        return Err(format!(
            "truncated: the header needs {header_len} bytes, but the file has {} after the length",
            len - 8
        ));
    }
    Ok(())
}

/// Says why the safetensors parser refused a file whose header is followed
/// by `data_len` bytes, in words a user can act on.
fn invalid_file(e: &safetensors::SafeTensorError, data_len: u64) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => format!(
            "not a valid safetensors file: the tensors' data offsets do not end where the file \
             does ({data_len} data bytes after the header): truncated, trailing bytes, or \
             offsets past the end"
        ),
        E::ValidationOverflow => {
            "not a valid safetensors file: a tensor's shape overflows when its size is computed"
                .to_string()
        }
        other => format!("not a valid safetensors file: {other}"),
    }
}

/// Reads a file after checking its size and header length.
fn read_checked(path: &Path, name: &str) -> Result<Vec<u8>> {
    let io_error = |e: io::Error| Error::Io {
        path: name.to_string(),
        message: format!("cannot read checkpoint: {e}"),
    };
    let mut file = File::open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(checkpoint_error(name, "not a regular file"));
    }
    let len = meta.len();
    if len < 8 {
        return Err(checkpoint_error(name, too_short(len)));
    }
    let mut head = [0u8; 8];
    file.read_exact(&mut head).map_err(io_error)?;
    check_header_length(u64::from_le_bytes(head), len).map_err(|m| checkpoint_error(name, m))?;
    let capacity = usize::try_from(len)
        .map_err(|_| checkpoint_error(name, format!("{len} bytes do not fit in memory")))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(capacity)
        .map_err(|e| checkpoint_error(name, format!("cannot allocate {len} bytes: {e}")))?;
    bytes.extend_from_slice(&head);
    // Read no more than the size seen, even if the file grows meanwhile.
    (&mut file)
        .take(len - 8)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 != len {
        return Err(checkpoint_error(
            name,
            format!(
                "the file shrank while being read ({} of {len} bytes)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` atomically with `write`: to a new temporary file beside it,
/// flushed and synced, then renamed over it; the directory is then synced (best
/// effort). On any error the temporary file is removed and `path` left as it was.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A temporary file left by a killed save may carry the name this one would
    // use (a reused process id): skip to the next name rather than fail.
    let (temp, mut file) = loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp_name);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        // The file handle is closed by now (dropped on error paths too).
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename itself durable; failure here cannot undo a completed save.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How [`Graph::restore_variables`] treats a checkpoint that does not match the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Every variable of the graph must be in the checkpoint with its shape, and
    /// every tensor of the checkpoint (outside `optimizer/`) must be a variable of
    /// the graph; otherwise nothing is restored and one error lists every problem.
    Strict,
    /// Restores the variables found with the right shape and reports the rest in
    /// the [`RestoreReport`].
    Partial,
}

/// A variable whose shape differs from its tensor's in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MismatchedShape {
    /// The variable's name.
    pub name: String,
    /// The variable's shape in the graph.
    pub variable: Vec<usize>,
    /// The tensor's shape in the checkpoint.
    pub checkpoint: Vec<usize>,
}

/// What a restore did: the variables restored and every mismatch between
/// checkpoint and graph (each list sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Variables given the checkpoint's value.
    pub restored: Vec<String>,
    /// Variables of the graph with no tensor in the checkpoint (left as they were).
    pub missing: Vec<String>,
    /// Tensors of the checkpoint that are no variable of the graph (ignored);
    /// the `optimizer/` tensors of a training checkpoint are not counted.
    pub unexpected: Vec<String>,
    /// Variables whose checkpoint tensor has another shape (left as they were).
    pub mismatched: Vec<MismatchedShape>,
}

impl RestoreReport {
    /// Whether checkpoint and graph matched exactly.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for RestoreReport {
    /// The problems, e.g. `2 missing variables (Variable_1, Variable_2); 1 shape mismatch
    /// (Variable: graph [2, 3], checkpoint [3, 2])`, or `all N variables restored`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_complete() {
            return write!(f, "all {} variables restored", self.restored.len());
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing from the checkpoint ({})",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected tensors that are no variable of the graph ({})",
                self.unexpected.len(),
                self.unexpected.join(", ")
            ));
        }
        if !self.mismatched.is_empty() {
            let list: Vec<String> = self
                .mismatched
                .iter()
                .map(|m| {
                    format!(
                        "{}: graph {:?}, checkpoint {:?}",
                        m.name, m.variable, m.checkpoint
                    )
                })
                .collect();
            parts.push(format!(
                "{} shape mismatches ({})",
                self.mismatched.len(),
                list.join("; ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Matches a checkpoint's tensors against a graph's variables.
fn plan_restore<'c>(
    graph: &Graph,
    ckpt: &'c Checkpoint,
) -> Result<(Vec<(Node, &'c Tensor)>, RestoreReport)> {
    let mut report = RestoreReport::default();
    let mut plan = Vec::new();
    let variables = graph.variables(false);
    let mut names = std::collections::HashSet::new();
    for var in variables {
        let name = var.name();
        let shape = graph.variable_value(&var)?.shape().to_vec();
        match ckpt.tensors.get(&name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.shape() != shape.as_slice() => {
                report.mismatched.push(MismatchedShape {
                    name: name.clone(),
                    variable: shape,
                    checkpoint: t.shape().to_vec(),
                });
            }
            Some(t) => {
                report.restored.push(name.clone());
                plan.push((var, t));
            }
        }
        names.insert(name);
    }
    report.unexpected = ckpt
        .tensors
        .keys()
        .filter(|k| !k.starts_with(OPTIMIZER_PREFIX) && !names.contains(*k))
        .cloned()
        .collect();
    report.restored.sort();
    report.missing.sort();
    report.mismatched.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((plan, report))
}

impl Graph {
    /// A checkpoint of the graph's variables (only the trainable ones if
    /// `only_trainable`), each named as its variable.
    ///
    /// # Errors
    /// None in practice (reading a variable's value of this graph cannot fail).
    pub fn variables_checkpoint(&self, only_trainable: bool) -> Result<Checkpoint> {
        let mut ckpt = Checkpoint::new();
        for var in self.variables(only_trainable) {
            ckpt.insert(var.name(), self.variable_value(&var)?)?;
        }
        Ok(ckpt)
    }

    /// Saves the graph's variables (only the trainable ones if `only_trainable`)
    /// to a safetensors file, atomically (see [`Checkpoint::save`]).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save_variables(&self, path: impl AsRef<Path>, only_trainable: bool) -> Result<()> {
        self.variables_checkpoint(only_trainable)?.save(path)
    }

    /// Sets the graph's variables from a checkpoint in memory, matching by name
    /// and shape (see [`RestoreMode`]); tensors under `optimizer/` are ignored.
    ///
    /// # Errors
    /// In [`RestoreMode::Strict`], [`Error::Checkpoint`] listing every missing
    /// variable, unexpected tensor and shape mismatch at once; nothing is restored then.
    pub fn restore_checkpoint(
        &self,
        ckpt: &Checkpoint,
        mode: RestoreMode,
    ) -> Result<RestoreReport> {
        self.restore_checkpoint_named(ckpt, mode, IN_MEMORY)
    }

    fn restore_checkpoint_named(
        &self,
        ckpt: &Checkpoint,
        mode: RestoreMode,
        path: &str,
    ) -> Result<RestoreReport> {
        let (plan, report) = plan_restore(self, ckpt)?;
        if mode == RestoreMode::Strict && !report.is_complete() {
            return Err(checkpoint_error(
                path,
                format!("does not match the graph: {report}"),
            ));
        }
        for (var, value) in plan {
            self.set_variable_by_id(var.id(), value.clone())?;
        }
        Ok(report)
    }

    /// Restores the graph's variables from a safetensors file (as written by
    /// [`save_variables`](Graph::save_variables) or any safetensors writer of
    /// `F32` tensors), matching tensors to variables by name and shape.
    /// `optimizer/` tensors of a training checkpoint are ignored, so weights can
    /// be taken from one.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("adgraph-doc-r-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let path = dir.join("w.safetensors");
    /// use adgraph::{checkpoint::RestoreMode, init::Ones, Graph};
    /// let g = Graph::new();
    /// g.variable(&[2], Ones, true).unwrap();
    /// g.save_variables(&path, true).unwrap();
    ///
    /// let g2 = Graph::new();
    /// g2.variable(&[2], Ones, true).unwrap();
    /// g2.variable(&[3], Ones, true).unwrap(); // not in the file
    /// assert!(g2.restore_variables(&path, RestoreMode::Strict).is_err());
    /// let report = g2.restore_variables(&path, RestoreMode::Partial).unwrap();
    /// assert_eq!(report.missing, vec!["Variable_0".to_string()]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`Checkpoint::load`]; in [`RestoreMode::Strict`], [`Error::Checkpoint`]
    /// listing every missing variable, unexpected tensor and shape mismatch at
    /// once, and nothing is restored.
    pub fn restore_variables(
        &self,
        path: impl AsRef<Path>,
        mode: RestoreMode,
    ) -> Result<RestoreReport> {
        let path = path.as_ref();
        let ckpt = Checkpoint::load(path)?;
        self.restore_checkpoint_named(&ckpt, mode, &path.display().to_string())
    }

    /// A checkpoint of the training state: all variables (trainable or not),
    /// the optimizer's [state](Optimizer::state) as tensors named
    /// `optimizer/<name>`, and `metadata`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when two state entries have the same name (an
    /// optimizer used on two graphs with equally named variables) or a state
    /// entry collides with a variable's name.
    pub fn training_checkpoint(
        &self,
        optimizer: &dyn Optimizer,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Checkpoint> {
        let mut ckpt = self.variables_checkpoint(false)?;
        for (name, value) in optimizer.state() {
            ckpt.insert(format!("{OPTIMIZER_PREFIX}{name}"), value)?;
        }
        ckpt.metadata = metadata.clone();
        Ok(ckpt)
    }

    /// Saves the training state (all variables, the optimizer's state and
    /// `metadata`, e.g. the epoch and position in the data) to one safetensors
    /// file, atomically. Resume with
    /// [`restore_training_state`](Graph::restore_training_state) into the same
    /// graph built again and an optimizer built with the same hyperparameters.
    ///
    /// # Errors
    /// As [`training_checkpoint`](Graph::training_checkpoint) and [`Checkpoint::save`].
    pub fn save_training_state(
        &self,
        path: impl AsRef<Path>,
        optimizer: &dyn Optimizer,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.training_checkpoint(optimizer, metadata)?.save(path)
    }

    /// Restores a training state from a checkpoint in memory: variables (strictly:
    /// the checkpoint must match the graph exactly) and the optimizer's state.
    /// Everything is checked before anything changes; on error the graph and the
    /// optimizer are as they were. Returns the checkpoint's metadata.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] listing every mismatch between variables and
    /// checkpoint, or saying why the optimizer rejected its state (another
    /// optimizer kind, a slot of a wrong shape, ...).
    pub fn restore_training_checkpoint(
        &self,
        ckpt: &Checkpoint,
        optimizer: &mut dyn Optimizer,
    ) -> Result<BTreeMap<String, String>> {
        self.restore_training_named(ckpt, optimizer, IN_MEMORY)
    }

    fn restore_training_named(
        &self,
        ckpt: &Checkpoint,
        optimizer: &mut dyn Optimizer,
        path: &str,
    ) -> Result<BTreeMap<String, String>> {
        let (plan, report) = plan_restore(self, ckpt)?;
        if !report.is_complete() {
            return Err(checkpoint_error(
                path,
                format!("does not match the graph: {report}"),
            ));
        }
        let state: Vec<(String, Tensor)> = ckpt
            .tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|rest| (rest.to_string(), v.clone()))
            })
            .collect();
        optimizer
            .load_state(&state, self)
            .map_err(|e| checkpoint_error(path, format!("optimizer state: {e}")))?;
        for (var, value) in plan {
            self.set_variable_by_id(var.id(), value.clone())?;
        }
        Ok(ckpt.metadata.clone())
    }

    /// Restores a training state saved by
    /// [`save_training_state`](Graph::save_training_state): the variables
    /// (strictly) and the optimizer's state. On error neither the graph nor the
    /// optimizer changes. Returns the metadata saved with it.
    ///
    /// # Errors
    /// As [`Checkpoint::load`] and
    /// [`restore_training_checkpoint`](Graph::restore_training_checkpoint).
    pub fn restore_training_state(
        &self,
        path: impl AsRef<Path>,
        optimizer: &mut dyn Optimizer,
    ) -> Result<BTreeMap<String, String>> {
        let path = path.as_ref();
        let ckpt = Checkpoint::load(path)?;
        self.restore_training_named(&ckpt, optimizer, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "adgraph-ckpt-unit-{tag}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn leftover_temp_files_of_a_killed_save_do_not_stop_a_save() {
        let dir = temp_dir("leftover");
        let path = dir.join("c.safetensors");
        // Half-written files under the very names the next saves would take,
        // as a killed process with this process id would have left them.
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        let leftovers: Vec<PathBuf> = (next..next + 64)
            .map(|k| dir.join(format!(".c.safetensors.{}.{k}.tmp", std::process::id())))
            .collect();
        for p in &leftovers {
            fs::write(p, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\":").unwrap();
        }
        let mut ckpt = Checkpoint::new();
        ckpt.insert("w", ndarray::arr1(&[1.0f32, 2.0]).into_dyn())
            .unwrap();
        ckpt.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().get("w"), ckpt.get("w"));
        assert!(leftovers.iter().all(|p| p.exists()), "not ours to remove");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_midway_keeps_previous_file_and_leaves_no_temp() {
        let dir = temp_dir("midway");
        let path = dir.join("c.safetensors");
        let mut old = Checkpoint::new();
        old.insert("w", ndarray::arr1(&[1.0f32, 2.0]).into_dyn())
            .unwrap();
        old.save(&path).unwrap();

        // A write that fails after writing part of the data (e.g. disk full).
        let err = write_atomic(&path, |f| {
            f.write_all(b"partial garbage")?;
            Err(io::Error::other("simulated failure"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated"));

        assert_eq!(Checkpoint::load(&path).unwrap(), old);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.safetensors")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reserved_and_empty_names_are_rejected() {
        let mut c = Checkpoint::new();
        assert!(c.insert("", Tensor::zeros(IxDyn(&[1]))).is_err());
        assert!(c.insert(METADATA_KEY, Tensor::zeros(IxDyn(&[1]))).is_err());
        c.tensors
            .insert(METADATA_KEY.into(), Tensor::zeros(IxDyn(&[1])));
        assert!(c.to_bytes().is_err());
    }
}
