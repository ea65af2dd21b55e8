//! The one error type of adgraph.
//!
//! Every fallible call returns [`Result<T>`](Result). Errors raised by an op's
//! shape rule, forward or backward are wrapped in [`Error::Node`], which names the
//! node, its op type and the shapes of its inputs, so a message always says
//! *where* in the graph something went wrong, not only *what*.

use std::fmt;

use crate::shape::TensorShape;

/// Shorthand for `std::result::Result<T, adgraph::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When a node error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// While the node was being added to the graph (static shape inference).
    Build,
    /// While its value was computed.
    Forward,
    /// While its inputs' gradients were computed.
    Backward,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Build => "building",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
        })
    }
}

/// A node's input as named in an error: its node name and (static or run-time) shape.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDesc {
    /// The input node's name.
    pub name: String,
    /// Its static shape (at build time) or the shape of its value (at run time).
    pub shape: TensorShape,
}

/// Everything that can go wrong in adgraph.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An op failed; names the node, its op type, the phase and its inputs.
    #[error("{node} ({op}), {phase}, inputs [{}]: {source}", fmt_inputs(.inputs))]
    Node {
        /// Name of the node (for a node being built: the name it would have had).
        node: String,
        /// The op's type name, e.g. `Add`.
        op: String,
        /// When it failed.
        phase: Phase,
        /// The inputs with their shapes.
        inputs: Vec<InputDesc>,
        /// What went wrong.
        source: Box<Error>,
    },
    /// Two shapes cannot be broadcast together (NumPy rules).
    #[error("cannot broadcast shapes {lhs} and {rhs}")]
    Broadcast {
        /// Left operand's shape.
        lhs: TensorShape,
        /// Right operand's shape.
        rhs: TensorShape,
    },
    /// Two shapes that must agree do not.
    #[error("{what}: expected shape {expected}, got {got}")]
    ShapeMismatch {
        /// What was being compared.
        what: String,
        /// The expected shape.
        expected: TensorShape,
        /// The shape found.
        got: TensorShape,
    },
    /// A tensor has the wrong number of dimensions.
    #[error("{what}: expected rank {expected}, got shape {got}")]
    Rank {
        /// What was being checked.
        what: String,
        /// The rank(s) accepted, e.g. `2` or `2 or 4`.
        expected: String,
        /// The shape found.
        got: TensorShape,
    },
    /// An axis does not exist for a tensor of the given rank.
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis {
        /// The axis given.
        axis: isize,
        /// The rank of the tensor.
        rank: usize,
    },
    /// An index or extent lies outside a tensor.
    #[error("out of bounds: {0}")]
    OutOfBounds(String),
    /// An attribute or argument has an invalid value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A placeholder needed by the computation was not fed.
    #[error("placeholder {name} with shape {shape} was not fed")]
    MissingFeed {
        /// The placeholder's name.
        name: String,
        /// Its static shape.
        shape: TensorShape,
    },
    /// A fed value does not fit the node it is fed to.
    #[error(
        "value fed to {name} has shape {got}, which does not match its static shape {expected}"
    )]
    FeedShape {
        /// The fed node's name.
        name: String,
        /// The node's static shape.
        expected: TensorShape,
        /// The shape of the value fed.
        got: TensorShape,
    },
    /// A value computed at run time disagrees with its node's static shape.
    #[error("{name} ({op}) computed a value of shape {got}, but its static shape is {expected}")]
    RuntimeShape {
        /// The node's name.
        name: String,
        /// Its op type.
        op: String,
        /// Its static shape.
        expected: TensorShape,
        /// The shape of the value computed.
        got: TensorShape,
    },
    /// A value or gradient holds NaN or infinity (found by the numerics check,
    /// [`RunTime::set_check_numerics`](crate::RunTime::set_check_numerics)).
    #[error("{node} ({op}), {phase}: {what} has {bad} NaN or infinite values of {total}")]
    Numerics {
        /// The first node found with a bad value.
        node: String,
        /// Its op type.
        op: String,
        /// Whether its value (forward) or a gradient it computed (backward).
        phase: Phase,
        /// Which tensor: its value, the gradient for one of its inputs, ...
        what: String,
        /// How many values are NaN or infinite.
        bad: usize,
        /// How many values the tensor has.
        total: usize,
    },
    /// No node has this name.
    #[error("no node named {0:?} in this graph")]
    UnknownNode(String),
    /// Nodes from two different graphs were combined.
    #[error("{context}: node {a} and node {b} belong to different graphs")]
    GraphMismatch {
        /// What was being done.
        context: String,
        /// A node of the first graph.
        a: String,
        /// A node of the other graph.
        b: String,
    },
    /// A node was expected to be of another kind (e.g. a variable).
    #[error("{name} is a {kind}, not a {expected}")]
    WrongKind {
        /// The node's name.
        name: String,
        /// Its kind (op type).
        kind: String,
        /// The kind required.
        expected: String,
    },
    /// A gradient was asked for a node that received none in this cycle.
    #[error("no gradient for {0} in this cycle (it was not reached by backward, or gradients are stopped there)")]
    NoGradient(String),
    /// A value was asked for a node not computed in this cycle.
    #[error("no value for {0} in this cycle (it has not been computed by forward)")]
    NoValue(String),
    /// Data could not be turned into a tensor.
    #[error("cannot make a tensor: {0}")]
    Tensor(String),
    /// A finite-difference gradient check failed.
    #[error("gradient check failed: {0}")]
    GradCheck(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file involved.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A data file was read but its contents are malformed (bad magic number,
    /// unsupported type, sizes that disagree with the header, ...).
    #[error("{path}: {message}")]
    Data {
        /// The file involved.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint is malformed, or does not fit the graph or optimizer it is
    /// restored into (see [`checkpoint`](crate::checkpoint)).
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file (`(in memory)` for a checkpoint not read from a file).
        path: String,
        /// What is wrong; for a restore, every problem found.
        message: String,
    },
}

fn fmt_inputs(inputs: &[InputDesc]) -> String {
    inputs
        .iter()
        .map(|i| format!("{}: {}", i.name, i.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The innermost error, past any [`Error::Node`] wrappers.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Node { source, .. } => source.root_cause(),
            other => other,
        }
    }
}

impl From<ndarray::ShapeError> for Error {
    fn from(e: ndarray::ShapeError) -> Self {
        Error::Tensor(e.to_string())
    }
}
