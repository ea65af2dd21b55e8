//! Graphviz export of a graph: [`Graph::to_dot`] and [`Graph::to_dot_of`].
//!
//! The text is in Graphviz's DOT language; render it with `dot -Tsvg graph.dot
//! -o graph.svg` (or paste it into any DOT viewer). Each graph node is one DOT
//! node labelled with its name, op type and static shape, and each edge runs
//! from an input to the node that consumes it (twice when an op takes the same
//! input twice, as `multiply(a, a)` does). Node kinds are drawn apart:
//!
//! | kind | drawn as |
//! |---|---|
//! | placeholder | blue ellipse |
//! | variable | green rounded box (bold border when trainable) |
//! | constant | grey box; a one-element constant shows its value |
//! | op | white box |
//! | failed operator node | red octagon |
//! | gradient node ([`Node::is_gradient`]) | dashed, red-brown, inside the `gradients` cluster, labelled with the forward node whose gradient it is part of |
//!
//! Node ids in the text are `n<index>` (the node's [`NodeId`] index), so names
//! never need escaping outside labels; in labels, `"` and `\` are escaped and
//! line breaks become `\n`.

use std::fmt::Write as _;

use crate::graph::{Graph, GraphInner, Node, NodeData, NodeId, NodeKind};

/// Fill and outline colours of gradient nodes.
const GRADIENT_COLOR: &str = "#a0522d";
const GRADIENT_FILL: &str = "#fdf0e6";

impl Graph {
    /// The whole graph in Graphviz's DOT language (see the [module
    /// docs](crate::dot) for how nodes are drawn).
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([2]);
    /// let y = ad::exp(&x).unwrap();
    /// let dy = ad::gradients(&[&y], &[&x], None).unwrap()[0].clone().unwrap();
    /// let dot = g.to_dot();
    /// assert!(dot.starts_with("digraph adgraph {"));
    /// assert!(dot.contains("n0 -> n1")); // Placeholder -> Exp
    /// assert!(dot.contains("label=\"Exp\\nExp (2,)\"")); // name, op type, static shape
    /// assert!(dot.contains("subgraph cluster_gradients")); // dy and its inputs
    /// assert!(dy.is_gradient());
    /// ```
    pub fn to_dot(&self) -> String {
        let g = self.borrow();
        let keep = vec![true; g.nodes.len()];
        render(&g, &keep, &[], &[])
    }

    /// The part of the graph that `targets` reach (the targets and every node
    /// they depend on through inputs) in Graphviz's DOT language, drawn as by
    /// [`to_dot`](Graph::to_dot); the targets get a double border. A target of
    /// another graph is left out, with a DOT comment naming it.
    ///
    /// ```
    /// use adgraph as ad;
    /// let g = ad::Graph::new();
    /// let x = g.placeholder([3]);
    /// let y = ad::exp(&x).unwrap();
    /// let unrelated = ad::tanh(&g.placeholder([3])).unwrap();
    /// let dot = g.to_dot_of(&[&y]);
    /// assert!(dot.contains("\"Exp") && !dot.contains("Tanh"));
    /// assert_eq!(dot.matches("->").count(), 1);
    /// # let _ = unrelated;
    /// ```
    pub fn to_dot_of(&self, targets: &[&Node]) -> String {
        let g = self.borrow();
        let mut keep = vec![false; g.nodes.len()];
        let mut stack: Vec<NodeId> = Vec::new();
        let mut marked = Vec::new();
        let mut foreign = Vec::new();
        for t in targets {
            if t.graph() != self {
                foreign.push(t.name());
                continue;
            }
            marked.push(t.id());
            if !keep[t.id().index()] {
                keep[t.id().index()] = true;
                stack.push(t.id());
            }
        }
        // Explicit stack: no recursion over the graph's depth.
        while let Some(id) = stack.pop() {
            for &input in &g.nodes[id.index()].inputs {
                if !keep[input.index()] {
                    keep[input.index()] = true;
                    stack.push(input);
                }
            }
        }
        render(&g, &keep, &marked, &foreign)
    }
}

/// The DOT text of the nodes for which `keep` is true; `targets` get a
/// double border, `foreign` are names of targets left out.
fn render(g: &GraphInner, keep: &[bool], targets: &[NodeId], foreign: &[String]) -> String {
    let mut out = String::new();
    out.push_str("digraph adgraph {\n");
    out.push_str("  rankdir=TB;\n");
    out.push_str("  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
    for name in foreign {
        let _ = writeln!(
            out,
            "  // left out: target {} belongs to another graph",
            name.replace(['\n', '\r'], " ")
        );
    }
    let kept = || (0..g.nodes.len()).filter(|&i| keep[i]);
    let is_target = |i: usize| targets.iter().any(|t| t.index() == i);
    for i in kept().filter(|&i| g.nodes[i].grad_of.is_none()) {
        let _ = writeln!(out, "  n{i} [{}];", attributes(g, i, is_target(i)));
    }
    let mut gradients = kept().filter(|&i| g.nodes[i].grad_of.is_some()).peekable();
    if gradients.peek().is_some() {
        out.push_str("  subgraph cluster_gradients {\n");
        let _ = writeln!(
            out,
            "    label=\"gradients\"; style=dashed; color=\"{GRADIENT_COLOR}\"; \
             fontcolor=\"{GRADIENT_COLOR}\";"
        );
        for i in gradients {
            let _ = writeln!(out, "    n{i} [{}];", attributes(g, i, is_target(i)));
        }
        out.push_str("  }\n");
    }
    for i in kept() {
        let data = &g.nodes[i];
        let style = if data.grad_of.is_some() {
            format!(" [color=\"{GRADIENT_COLOR}\", style=dashed]")
        } else {
            String::new()
        };
        for input in data.inputs.iter().filter(|j| keep[j.index()]) {
            let _ = writeln!(out, "  n{} -> n{i}{style};", input.index());
        }
    }
    out.push_str("}\n");
    out
}

/// The DOT attributes of node `i`: label, shape, style and colours.
fn attributes(g: &GraphInner, i: usize, target: bool) -> String {
    let data: &NodeData = &g.nodes[i];
    // Name; op type and static shape; what kind of value; whose gradient.
    let mut label = format!("{}\n{} {}", data.name, data.type_name, data.shape);
    let (shape, mut style, mut fill) = match &data.kind {
        NodeKind::Placeholder => ("ellipse", "filled".to_string(), "#dbe9f6"),
        NodeKind::Variable(slot) if slot.trainable => {
            label.push_str("\ntrainable");
            ("box", "filled,rounded,bold".to_string(), "#dcf0d5")
        }
        NodeKind::Variable(_) => ("box", "filled,rounded".to_string(), "#dcf0d5"),
        NodeKind::Constant(value) => {
            if let (1, Some(v)) = (value.len(), value.iter().next()) {
                label.push_str(&format!("\n= {v}"));
            }
            ("box", "filled".to_string(), "#eeeeee")
        }
        NodeKind::Op(_) => ("box", "filled".to_string(), "#ffffff"),
        NodeKind::Failed(_) => ("octagon", "filled".to_string(), "#f4cccc"),
    };
    let mut colors = String::new();
    if let Some(of) = data.grad_of {
        let forward = g
            .nodes
            .get(of.index())
            .map_or_else(|| format!("node {}", of.index()), |d| d.name.clone());
        label.push_str(&format!("\ngrad of {forward}"));
        style.push_str(",dashed");
        if matches!(data.kind, NodeKind::Op(_)) {
            fill = GRADIENT_FILL;
        }
        colors = format!(", color=\"{GRADIENT_COLOR}\", fontcolor=\"{GRADIENT_COLOR}\"");
    }
    let border = if target { ", peripheries=2" } else { "" };
    format!(
        "label=\"{}\", shape={shape}, style=\"{style}\", fillcolor=\"{fill}\"{colors}{border}",
        escape(&label)
    )
}

/// `s` as the inside of a DOT double-quoted string: `\` and `"` escaped,
/// line breaks as `\n` (a centred line break in a label).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
