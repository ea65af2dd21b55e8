//! [`Conv2D`] and [`Conv2DTranspose`]: 2-D convolutions over NHWC images with
//! a kernel, a bias and an activation.

use std::cell::OnceCell;
use std::rc::Rc;

use super::{display_name, input_dim, refit_error, Activation, InitRef, Layer, LayerScope};
use crate::error::{Error, Result};
use crate::graph::Node;
use crate::init::{GlorotUniform, Initializer, Zeros};
use crate::ops::arithmetic::add;
use crate::ops::conv::{conv2d, conv2d_transpose, Padding};

/// The options both convolution layers share.
struct ConvOptions {
    filters: usize,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: InitRef,
    bias_initializer: InitRef,
    name: Option<String>,
}

impl ConvOptions {
    fn new(filters: usize, kernel_size: [usize; 2]) -> Self {
        ConvOptions {
            filters,
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Rc::new(GlorotUniform::new()),
            bias_initializer: Rc::new(Zeros),
            name: None,
        }
    }

    fn check(&self, label: &str) -> Result<()> {
        let bad = self.filters == 0 || self.kernel_size.contains(&0) || self.strides.contains(&0);
        if bad {
            return Err(Error::invalid(format!(
                "layer {label}: filters ({}), kernel size {:?} and strides {:?} must all be at least 1",
                self.filters, self.kernel_size, self.strides
            )));
        }
        Ok(())
    }
}

struct ConvVars {
    in_channels: usize,
    kernel: Node,
    bias: Option<Node>,
}

/// Builds (or reuses) a convolution layer's variables and applies `conv` to
/// `x` and the kernel, then the bias and the activation. `kernel_shape` gives
/// the kernel's shape from the input channels.
fn apply_conv(
    o: &ConvOptions,
    built: &OnceCell<(LayerScope, ConvVars)>,
    x: &Node,
    default_name: &str,
    kind: &'static str,
    kernel_shape: impl FnOnce(usize) -> [usize; 4],
    conv: impl FnOnce(&Node, &Node) -> Result<Node>,
) -> Result<Node> {
    let label = display_name(o.name.as_deref(), default_name, kind);
    o.check(&label)?;
    if x.shape().rank() != 4 {
        return Err(Error::Rank {
            what: format!("input {} of layer {label} (images [N, H, W, C])", x.name()),
            expected: "4".into(),
            got: x.shape(),
        });
    }
    let channels = input_dim(x, -1, 4, &label)?;
    let (scope, vars) =
        LayerScope::get_or_build(built, x, o.name.as_deref(), default_name, kind, |_| {
            let g = x.graph();
            let kernel = g.variable_named(
                "kernel",
                &kernel_shape(channels),
                o.kernel_initializer.clone(),
                true,
            )?;
            let bias = if o.use_bias {
                Some(g.variable_named("bias", &[o.filters], o.bias_initializer.clone(), true)?)
            } else {
                None
            };
            Ok(ConvVars {
                in_channels: channels,
                kernel,
                bias,
            })
        })?;
    if vars.in_channels != channels {
        return Err(refit_error(
            scope,
            x,
            "channels",
            vars.in_channels,
            channels,
        ));
    }
    scope.enter(|| {
        let y = conv(x, &vars.kernel)?;
        let y = match &vars.bias {
            Some(b) => add(&y, b)?,
            None => y,
        };
        o.activation.apply(&y)
    })
}

macro_rules! conv_options {
    () => {
        /// The strides along height and width (default `[1, 1]`).
        #[must_use]
        pub fn strides(mut self, strides: [usize; 2]) -> Self {
            self.o.strides = strides;
            self
        }

        /// The padding (default [`Padding::Valid`], as Keras).
        #[must_use]
        pub fn padding(mut self, padding: Padding) -> Self {
            self.o.padding = padding;
            self
        }

        /// The activation applied to the result (default none).
        #[must_use]
        pub fn activation(mut self, activation: Activation) -> Self {
            self.o.activation = activation;
            self
        }

        /// Whether to add a bias per filter (default `true`).
        #[must_use]
        pub fn use_bias(mut self, use_bias: bool) -> Self {
            self.o.use_bias = use_bias;
            self
        }

        /// The kernel's initializer (default [`GlorotUniform`]).
        #[must_use]
        pub fn kernel_initializer(mut self, init: impl Initializer + 'static) -> Self {
            self.o.kernel_initializer = Rc::new(init);
            self
        }

        /// The bias's initializer (default [`Zeros`]).
        #[must_use]
        pub fn bias_initializer(mut self, init: impl Initializer + 'static) -> Self {
            self.o.bias_initializer = Rc::new(init);
            self
        }

        /// The layer's scope name (default the layer's kind in snake case,
        /// made unique in the graph).
        #[must_use]
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.o.name = Some(name.into());
            self
        }

        /// The kernel, once applied.
        pub fn kernel(&self) -> Option<Node> {
            self.built.get().map(|(_, v)| v.kernel.clone())
        }

        /// The bias `[filters]`, once applied with a bias.
        pub fn bias(&self) -> Option<Node> {
            self.built.get().and_then(|(_, v)| v.bias.clone())
        }
    };
}

macro_rules! conv_layer_impl {
    ($t:ident, $kind:literal) => {
        impl Layer for $t {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn scope_name(&self) -> Option<String> {
                self.built.get().map(|(s, _)| s.name().to_string())
            }
            fn variables(&self) -> Vec<Node> {
                self.built
                    .get()
                    .map(|(_, v)| {
                        std::iter::once(v.kernel.clone())
                            .chain(v.bias.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }
    };
}

/// A 2-D convolution layer (`tf.layers.conv2d`, Keras `Conv2D`) on NHWC
/// images `[N, H, W, C]`: `activation(conv2d(x, kernel) + bias)` with
/// `kernel [kh, kw, C, filters]` (Glorot uniform) and `bias [filters]` (zeros);
/// default scope `conv2d`, strides 1, `VALID` padding.
///
/// ```
/// use adgraph::{self as ad, layers::{Activation, Conv2D, Layer}, Padding};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 28, 28, 1]);
/// let conv = Conv2D::new(16, [3, 3]).strides([2, 2]).padding(Padding::Same)
///     .activation(Activation::Relu);
/// assert_eq!(conv.apply(&x).unwrap().shape(), ad::shape![None, 14, 14, 16]);
/// assert_eq!(conv.kernel().unwrap().shape(), ad::shape![3, 3, 1, 16]);
/// assert_eq!(conv.variables()[1].name(), "conv2d/bias");
/// ```
pub struct Conv2D {
    o: ConvOptions,
    built: OnceCell<(LayerScope, ConvVars)>,
}

impl Conv2D {
    /// A convolution with `filters` output channels and a `[kh, kw]` window.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Self {
        Conv2D {
            o: ConvOptions::new(filters, kernel_size),
            built: OnceCell::new(),
        }
    }

    conv_options!();

    /// `activation(conv2d(x, kernel) + bias)`; the first call makes the
    /// variables from the static channel count of `x`, later calls share them.
    ///
    /// # Errors
    /// [`Error::Rank`] when `x` is not rank 4; [`Error::InvalidArgument`]
    /// when its channel dim is unknown or differs from the variables', or a
    /// size option is 0 (each naming the layer, `x` and its shape); the
    /// convolution's errors (a window larger than a `VALID` input) naming
    /// the `<scope>/Conv2D` node; [`Error::GraphMismatch`].
    pub fn apply(&self, x: &Node) -> Result<Node> {
        let o = &self.o;
        let [kh, kw] = o.kernel_size;
        apply_conv(
            o,
            &self.built,
            x,
            "conv2d",
            "Conv2D",
            |c| [kh, kw, c, o.filters],
            |x, k| conv2d(x, k, o.strides, o.padding),
        )
    }
}

conv_layer_impl!(Conv2D, "Conv2D");

/// A transposed 2-D convolution layer (`tf.layers.conv2d_transpose`, Keras
/// `Conv2DTranspose`) on NHWC images `[N, H, W, C]`:
/// `activation(conv2d_transpose(x, kernel) + bias)` with
/// `kernel [kh, kw, filters, C]` (TensorFlow's layout; Glorot uniform) and
/// `bias [filters]` (zeros); the output is `[N, H*sh, W*sw, filters]` with
/// `SAME` padding ([`Padding::transpose_output`]). Default scope
/// `conv2d_transpose`, strides 1, `VALID` padding.
///
/// ```
/// use adgraph::{self as ad, layers::{Conv2DTranspose, Layer}, Padding};
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 7, 7, 64]);
/// let up = Conv2DTranspose::new(32, [3, 3]).strides([2, 2]).padding(Padding::Same);
/// assert_eq!(up.apply(&x).unwrap().shape(), ad::shape![None, 14, 14, 32]);
/// assert_eq!(up.kernel().unwrap().shape(), ad::shape![3, 3, 32, 64]);
/// ```
pub struct Conv2DTranspose {
    o: ConvOptions,
    built: OnceCell<(LayerScope, ConvVars)>,
}

impl Conv2DTranspose {
    /// A transposed convolution with `filters` output channels and a `[kh, kw]` window.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Self {
        Conv2DTranspose {
            o: ConvOptions::new(filters, kernel_size),
            built: OnceCell::new(),
        }
    }

    conv_options!();

    /// `activation(conv2d_transpose(x, kernel) + bias)`; the first call makes
    /// the variables from the static channel count of `x`, later calls share them.
    ///
    /// # Errors
    /// As [`Conv2D::apply`].
    pub fn apply(&self, x: &Node) -> Result<Node> {
        let o = &self.o;
        let [kh, kw] = o.kernel_size;
        apply_conv(
            o,
            &self.built,
            x,
            "conv2d_transpose",
            "Conv2DTranspose",
            |c| [kh, kw, o.filters, c],
            |x, k| conv2d_transpose(x, k, o.strides, o.padding),
        )
    }
}

conv_layer_impl!(Conv2DTranspose, "Conv2DTranspose");
