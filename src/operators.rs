//! `+ - * /` and unary `-` on nodes, and between nodes and plain numbers or arrays.
//!
//! **Error style.** Operators cannot return `Result` without making chains like
//! `&x * &w + &b` unwieldy, so they always return a [`Node`]. When the op cannot
//! be built (shapes that do not broadcast, nodes of two graphs), the returned node
//! *records* the error: every op built on it, and every forward or backward that
//! reaches it, returns that error. [`Node::check`] reports it at once. The free
//! functions ([`add`], ...) return `Result<Node>` and fail eagerly.
//!
//! The non-node operand becomes a [`constant`](crate::Graph::constant) of the
//! node's graph, in either order, so `2.0 - &x` subtracts `x` from 2.
//!
//! ```
//! use adgraph as ad;
//! let g = ad::Graph::new();
//! let a = g.placeholder([3]);
//! let b = &a + [[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let c = [3.0f32, 4.0, 5.0] * &a;
//! let d = 2.0 - &c;
//! assert_eq!(b.shape(), ad::shape![2, 3]);
//! let mut rt = ad::RunTime::new();
//! let feed = ad::Feed::new().with(&a, [1.0f32, 1.0, 1.0]).unwrap();
//! assert_eq!(rt.forward(&d, &feed).unwrap(), &ad::tensor([-1.0f32, -2.0, -3.0]));
//! ```

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::error::Result;
use crate::graph::{Graph, Node, NodeKind};
use crate::ops::arithmetic::{add, divide, multiply, negate, subtract};
use crate::tensor::{IntoTensor, Tensor};

/// A value usable as the other operand of an operator on a node: another node, or
/// anything that makes a tensor (it becomes a constant).
pub trait Operand {
    /// The operand as a node of `graph`.
    ///
    /// # Errors
    /// When the value cannot be made into a tensor.
    fn into_operand(self, graph: &Graph) -> Result<Node>;
}

impl Operand for Node {
    fn into_operand(self, _graph: &Graph) -> Result<Node> {
        Ok(self)
    }
}

impl Operand for &Node {
    fn into_operand(self, _graph: &Graph) -> Result<Node> {
        Ok(self.clone())
    }
}

impl<T: IntoTensor> Operand for T {
    fn into_operand(self, graph: &Graph) -> Result<Node> {
        graph.constant(self)
    }
}

fn is_failed(node: &Node) -> bool {
    matches!(
        node.graph.borrow().nodes[node.id.index()].kind,
        NodeKind::Failed(_)
    )
}

/// Builds `f(lhs, rhs)`, or a node recording why it could not be built.
fn apply(
    lhs: Node,
    rhs: impl Operand,
    reversed: bool,
    f: fn(&Node, &Node) -> Result<Node>,
) -> Node {
    if is_failed(&lhs) {
        return lhs;
    }
    let graph = lhs.graph.clone();
    let rhs = match rhs.into_operand(&graph) {
        Ok(r) => r,
        Err(e) => return graph.failed_node(e),
    };
    if is_failed(&rhs) {
        return rhs;
    }
    let built = if reversed {
        f(&rhs, &lhs)
    } else {
        f(&lhs, &rhs)
    };
    built.unwrap_or_else(|e| graph.failed_node(e))
}

macro_rules! binary_operator {
    ($Trait:ident, $method:ident, $func:ident) => {
        impl<T: Operand> $Trait<T> for &Node {
            type Output = Node;
            fn $method(self, rhs: T) -> Node {
                apply(self.clone(), rhs, false, $func)
            }
        }
        impl<T: Operand> $Trait<T> for Node {
            type Output = Node;
            fn $method(self, rhs: T) -> Node {
                apply(self, rhs, false, $func)
            }
        }
        binary_operator!(@reversed $Trait, $method, $func, f32);
        binary_operator!(@reversed $Trait, $method, $func, Tensor);
        impl<const N: usize> $Trait<&Node> for [f32; N] {
            type Output = Node;
            fn $method(self, rhs: &Node) -> Node {
                apply(rhs.clone(), self, true, $func)
            }
        }
        impl<const N: usize> $Trait<Node> for [f32; N] {
            type Output = Node;
            fn $method(self, rhs: Node) -> Node {
                apply(rhs, self, true, $func)
            }
        }
        impl<const N: usize, const M: usize> $Trait<&Node> for [[f32; N]; M] {
            type Output = Node;
            fn $method(self, rhs: &Node) -> Node {
                apply(rhs.clone(), self, true, $func)
            }
        }
        impl<const N: usize, const M: usize> $Trait<Node> for [[f32; N]; M] {
            type Output = Node;
            fn $method(self, rhs: Node) -> Node {
                apply(rhs, self, true, $func)
            }
        }
    };
    (@reversed $Trait:ident, $method:ident, $func:ident, $Lhs:ty) => {
        impl $Trait<&Node> for $Lhs {
            type Output = Node;
            fn $method(self, rhs: &Node) -> Node {
                apply(rhs.clone(), self, true, $func)
            }
        }
        impl $Trait<Node> for $Lhs {
            type Output = Node;
            fn $method(self, rhs: Node) -> Node {
                apply(rhs, self, true, $func)
            }
        }
    };
}

binary_operator!(Add, add, add);
binary_operator!(Sub, sub, subtract);
binary_operator!(Mul, mul, multiply);
binary_operator!(Div, div, divide);

impl Neg for &Node {
    type Output = Node;
    fn neg(self) -> Node {
        self.clone().neg()
    }
}

impl Neg for Node {
    type Output = Node;
    fn neg(self) -> Node {
        if is_failed(&self) {
            return self;
        }
        negate(&self).unwrap_or_else(|e| self.graph.failed_node(e))
    }
}
