//! The core engine: graphs and names, default-graph scopes, feeding, forward and
//! backward (chains, diamonds, stop-gradient, accumulation), cycles, variables,
//! operators, and the errors bad input gets.

use adgraph::{self as ad, shape, Error, Feed, Graph, RunTime, Tensor};

fn t2(rows: &[&[f32]]) -> Tensor {
    let cols = rows[0].len();
    let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_shape_vec(vec![rows.len(), cols], data).unwrap()
}

// ---------------------------------------------------------------- the original README

#[test]
fn readme_default_graph() {
    let a = ad::placeholder([2, 3]);
    let b = ad::placeholder([2, 3]);
    let c = ad::add(&a, &b).unwrap();
    let default_graph = ad::get_default_graph();
    assert_eq!(a.graph(), &default_graph);
    assert_eq!(b.graph(), &default_graph);
    assert_eq!(c.graph(), &default_graph);
}

#[test]
fn readme_scoped_graph() {
    let graph = Graph::new();
    let a = {
        let _scope = graph.as_default();
        let a = ad::placeholder([2, 3]);
        let b = ad::placeholder([2, 3]);
        let _c = ad::add(&a, &b).unwrap();
        a
    };
    let default_graph = ad::get_default_graph();
    assert_eq!(a.graph(), &graph);
    assert_ne!(a.graph(), &default_graph);
}

#[test]
fn readme_runtime_values_and_gradients() {
    let graph = Graph::new();
    let _scope = graph.as_default();
    let a = ad::placeholder([2, 3]);
    let b = ad::placeholder([2, 3]);
    let c = ad::add(&a, &b).unwrap();

    let mut runtime = RunTime::new();
    let feed = ad::feed! {
        a => [[0., 1., 2.], [3., 4., 5.]],
        b => [[1., 1., 1.], [0., 0., 0.]],
    }
    .unwrap();
    let c_val = runtime.forward(&c, &feed).unwrap().clone();
    runtime
        .backward(&c, &feed, Some(ad::tensor([[1., 1., 1.], [1., 1., 1.]])))
        .unwrap();
    // The seed README's printed output.
    assert_eq!(c_val, t2(&[&[1., 2., 3.], &[3., 4., 5.]]));
    assert_eq!(
        runtime.get_bwval(&a.name()).unwrap(),
        &t2(&[&[1., 1., 1.], &[1., 1., 1.]])
    );
    assert_eq!(
        runtime.get_bwval(&b.name()).unwrap(),
        &t2(&[&[1., 1., 1.], &[1., 1., 1.]])
    );
}

#[test]
fn readme_shape_with_none() {
    let g = Graph::new();
    let a = g.placeholder(shape![None, 1, 2, 3]);
    assert_eq!(a.shape().to_string(), "(None, 1, 2, 3)");
    let value = Tensor::from_shape_fn(vec![1, 1, 2, 3], |i| i[3] as f32);
    let feed = Feed::new().with(&a, value.clone()).unwrap();
    let mut rt = RunTime::new();
    assert_eq!(rt.forward(&a, &feed).unwrap(), &value);
    // Any batch size matches None.
    let feed = Feed::new()
        .with(&a, Tensor::zeros(vec![7, 1, 2, 3]))
        .unwrap();
    rt.reset();
    assert_eq!(rt.forward(&a, &feed).unwrap().shape(), &[7, 1, 2, 3]);
}

#[test]
fn readme_arithmetic_with_plain_arrays() {
    let g = Graph::new();
    let a = g.placeholder([3]);
    let b = &a + [[1., 2., 3.], [4., 5., 6.]];
    let c = [3., 4., 5.] * &a;
    assert_eq!(b.shape(), shape![2, 3]);
    assert_eq!(c.shape(), shape![3]);
    let feed = Feed::new().with(&a, [1., 2., 3.]).unwrap();
    let mut rt = RunTime::new();
    assert_eq!(
        rt.forward(&b, &feed).unwrap(),
        &t2(&[&[2., 4., 6.], &[5., 7., 9.]])
    );
    assert_eq!(rt.forward(&c, &feed).unwrap(), &ad::tensor([3., 8., 15.]));
    // d(sum b)/da = 2 (b broadcasts a over two rows), d(sum c)/da = [3, 4, 5]
    rt.backward(&b, &feed, None).unwrap();
    assert_eq!(rt.grad(&a).unwrap(), &ad::tensor([2., 2., 2.]));
    rt.backward(&c, &feed, None).unwrap();
    assert_eq!(rt.grad(&a).unwrap(), &ad::tensor([5., 6., 7.]));
}

// ---------------------------------------------------------------- graphs and names

#[test]
fn names_follow_the_seed_scheme() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let names: Vec<String> = (0..3).map(|_| ad::add(&x, &x).unwrap().name()).collect();
    assert_eq!(names, ["Add", "Add_0", "Add_1"]);
    assert_eq!(x.name(), "Placeholder");
    assert_eq!(g.placeholder([2]).name(), "Placeholder_0");
    assert_eq!(g.node("Add_0").unwrap().op_type(), "Add");
    assert!(matches!(g.node("Add_7"), Err(Error::UnknownNode(n)) if n == "Add_7"));
}

#[test]
fn nested_default_scopes_restore_the_outer_graph() {
    let outer = Graph::new();
    let inner = Graph::new();
    let _o = outer.as_default();
    {
        let _i = inner.as_default();
        assert_eq!(ad::get_default_graph(), inner);
        assert_eq!(ad::placeholder([1]).graph(), &inner);
    }
    assert_eq!(ad::get_default_graph(), outer);
    let v = inner.with_default(|| ad::constant(1.0).unwrap());
    assert_eq!(v.graph(), &inner);
    assert_eq!(ad::get_default_graph(), outer);
}

// ---------------------------------------------------------------- forward and backward

#[test]
fn forward_computes_each_node_once_and_only_what_is_needed() {
    let g = Graph::new();
    let x = g.placeholder([]);
    let unused = g.placeholder([]);
    let y = ad::exp(&x).unwrap();
    let _z = &unused + &y; // needs `unused`, which is not fed
    let feed = Feed::new().with(&x, 1.0).unwrap();
    let mut rt = RunTime::new();
    // y does not need `unused`, so the missing feed does not matter.
    assert!((rt.forward(&y, &feed).unwrap().sum() - 1f32.exp()).abs() < 1e-6);
    // Values are cached within a cycle: a new feed does not recompute y.
    let feed2 = Feed::new().with(&x, 2.0).unwrap();
    assert!((rt.forward(&y, &feed2).unwrap().sum() - 1f32.exp()).abs() < 1e-6);
    rt.reset();
    assert!((rt.forward(&y, &feed2).unwrap().sum() - 2f32.exp()).abs() < 1e-5);
}

#[test]
fn chain_of_ten_thousand_nodes() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let mut y = x.clone();
    for i in 0..10_000 {
        // Alternate multiply and add so the gradient is a known product.
        y = if i % 2 == 0 { &y * 1.0001 } else { &y + 0.5 };
    }
    let y = y.check().unwrap();
    assert!(g.len() > 20_000);
    let feed = Feed::new().with(&x, [1.0, 2.0]).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, None).unwrap();
    // y = 1.0001^5000 * x + const, so dy/dx = 1.0001^5000
    let want = 1.0001f64.powi(5000) as f32;
    for &g in rt.grad(&x).unwrap() {
        assert!((g - want).abs() < 1e-2 * want, "{g} vs {want}");
    }
}

#[test]
fn diamond_gradients_are_summed_over_consumers() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let a = ad::exp(&x).unwrap();
    let b = &a * &a; // the same node twice in one op
    let c = &b + &a;
    let d = &c - &x;
    let feed = Feed::new().with(&x, [0.0, 0.5, -1.0]).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&d, &feed, None).unwrap();
    // d = e^2x + e^x - x, so dd/dx = 2e^2x + e^x - 1
    for (xv, gv) in [0.0f32, 0.5, -1.0].iter().zip(rt.grad(&x).unwrap()) {
        let want = 2.0 * (2.0 * xv).exp() + xv.exp() - 1.0;
        assert!((gv - want).abs() < 1e-5, "{gv} vs {want}");
    }
    // dd/da = 2a + 1
    let a_val = rt.value(&a).unwrap().clone();
    let ga = rt.grad(&a).unwrap();
    for (av, gv) in a_val.iter().zip(ga) {
        assert!((gv - (2.0 * av + 1.0)).abs() < 1e-5);
    }
}

#[test]
fn backward_calls_accumulate_within_a_cycle() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = &x * 3.0;
    let z = &x * 5.0;
    let feed = Feed::new().with(&x, [1.0, 1.0]).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, None).unwrap();
    rt.backward(&z, &feed, Some(ad::tensor([1.0, 2.0])))
        .unwrap();
    // 3 from y, plus 5 * upstream from z
    assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([8.0, 13.0]));
}

#[test]
fn stop_gradients_at_a_node() {
    let g = Graph::new();
    let x = g.placeholder([]);
    let a = &x * 2.0;
    let b = &x * 3.0;
    let y = &a + &b;
    let feed = Feed::new().with(&x, 1.0).unwrap();
    let mut rt = RunTime::new();
    rt.stop_gradients_at(&[&a]);
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap().sum(), 3.0);
    assert!(matches!(rt.grad(&a), Err(Error::NoGradient(_))));
    // The setting outlives the cycle until cleared.
    rt.reset();
    rt.clear_stop_gradients();
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap().sum(), 5.0);
}

#[test]
fn constants_take_no_gradient() {
    let g = Graph::new();
    let c = g.constant([1.0, 2.0]).unwrap();
    let x = g.placeholder([2]);
    let y = &c * &x;
    let feed = Feed::new().with(&x, [1.0, 1.0]).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, None).unwrap();
    assert!(rt.grad(&c).is_err());
    assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([1.0, 2.0]));
}

#[test]
fn cycle_scope_clears_state_at_start_and_end() {
    let g = Graph::new();
    let x = g.placeholder([]);
    let y = ad::exp(&x).unwrap();
    let mut rt = RunTime::new();
    let f1 = Feed::new().with(&x, 0.0).unwrap();
    rt.forward(&y, &f1).unwrap();
    let f2 = Feed::new().with(&x, 1.0).unwrap();
    // Stale state from before the cycle is cleared at its start...
    let v = rt
        .forward_backward_cycle(|rt| rt.forward(&y, &f2).map(|v| v.sum()))
        .unwrap();
    assert!((v - 1f32.exp()).abs() < 1e-6);
    // ...and its own state at its end.
    assert!(matches!(rt.value(&y), Err(Error::NoValue(_))));
    assert!(rt.get_bwval(&y.name()).is_err());
}

#[test]
fn evaluate_several_nodes() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = &x + 1.0;
    let z = &x * 2.0;
    let feed = Feed::new().with(&x, [1.0, 2.0]).unwrap();
    let vals = RunTime::new().evaluate(&[&y, &z], &feed).unwrap();
    assert_eq!(vals[0], ad::tensor([2.0, 3.0]));
    assert_eq!(vals[1], ad::tensor([2.0, 4.0]));
}

// ---------------------------------------------------------------- variables

#[test]
fn variables_persist_across_runtimes() {
    let g = Graph::new();
    let w = g.variable(&[2], ad::init::Ones, true).unwrap();
    let frozen = g.variable(&[1], ad::init::Zeros, false).unwrap();
    assert_eq!(g.variables(true), vec![w.clone()]);
    assert_eq!(g.variables(false), vec![w.clone(), frozen.clone()]);
    let y = &w * 2.0;
    g.set_variable_value(&w, [3.0, 4.0]).unwrap();
    for _ in 0..2 {
        let mut rt = RunTime::new();
        assert_eq!(
            rt.forward(&y, &Feed::new()).unwrap(),
            &ad::tensor([6.0, 8.0])
        );
        rt.backward(&y, &Feed::new(), None).unwrap();
        assert_eq!(rt.grad(&w).unwrap(), &ad::tensor([2.0, 2.0]));
    }
    g.initialize_variables(false).unwrap();
    assert_eq!(g.variable_value(&w).unwrap(), ad::tensor([1.0, 1.0]));
    assert!(matches!(
        g.set_variable_value(&w, [1.0, 2.0, 3.0]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(g.variable_value(&y), Err(Error::WrongKind { .. })));
}

// ---------------------------------------------------------------- errors, never panics

#[test]
fn missing_feed_names_the_placeholder() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    let y = &x + 1.0;
    let err = RunTime::new().forward(&y, &Feed::new()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingFeed { name, .. } if name == "Placeholder"),
        "{err}"
    );
    assert!(err.to_string().contains("(None, 3)"));
}

#[test]
fn wrong_feed_shape_is_refused() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    let err = Feed::new().with(&x, [[1.0, 2.0]]).unwrap_err();
    assert!(matches!(err, Error::FeedShape { .. }), "{err}");
    let c = g.constant(1.0).unwrap();
    assert!(matches!(
        Feed::new().with(&c, 1.0),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        (vec![1.0f32; 5], [2, 3]).into_feed_value(),
        Err(Error::Tensor(_))
    ));
}

trait IntoFeedValue {
    fn into_feed_value(self) -> ad::Result<Tensor>;
}

impl<T: ad::IntoTensor> IntoFeedValue for T {
    fn into_feed_value(self) -> ad::Result<Tensor> {
        self.into_tensor()
    }
}

#[test]
fn incompatible_broadcast_fails_when_built() {
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([4]);
    let err = ad::add(&a, &b).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Add") && msg.contains("Placeholder_0") && msg.contains("(4,)"),
        "{msg}"
    );
    assert!(matches!(err.root_cause(), Error::Broadcast { .. }));
}

#[test]
fn incompatible_run_time_shapes_fail_in_forward() {
    let g = Graph::new();
    let a = g.placeholder(shape![None]);
    let b = g.placeholder(shape![None]);
    let c = &a * &b;
    let feed = ad::feed! { a => [1.0, 2.0], b => [1.0, 2.0, 3.0] }.unwrap();
    let err = RunTime::new().forward(&c, &feed).unwrap_err();
    assert!(
        matches!(&err, Error::Node { node, phase: ad::Phase::Forward, .. } if node == "Multiply"),
        "{err}"
    );
}

#[test]
fn failed_operator_nodes_report_at_first_use() {
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([4]);
    let bad = &a + &b;
    let worse = &bad * 2.0;
    assert!(matches!(worse.clone().check(), Err(Error::Node { .. })));
    assert!(ad::exp(&worse).is_err());
    let feed = ad::feed! { a => [[0.0; 3]; 2], b => [0.0; 4] }.unwrap();
    assert!(RunTime::new().forward(&worse, &feed).is_err());
}

#[test]
fn nodes_of_two_graphs_do_not_mix() {
    let g1 = Graph::new();
    let g2 = Graph::new();
    let a = g1.placeholder([2]);
    let b = g2.placeholder([2]);
    assert!(matches!(ad::add(&a, &b), Err(Error::GraphMismatch { .. })));
    assert!(matches!(
        (&a + &b).check(),
        Err(Error::GraphMismatch { .. })
    ));
    let mut rt = RunTime::new();
    let fa = Feed::new().with(&a, [1.0, 1.0]).unwrap();
    rt.forward(&a, &fa).unwrap();
    assert!(matches!(
        rt.forward(&b, &Feed::new()),
        Err(Error::GraphMismatch { .. })
    ));
    assert!(matches!(
        fa.with(&b, [1.0, 1.0]),
        Err(Error::GraphMismatch { .. })
    ));
    assert!(g1.variable_value(&b).is_err());
}

#[test]
fn upstream_of_the_wrong_shape_is_refused() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = &x * 2.0;
    let feed = Feed::new().with(&x, [1.0, 1.0]).unwrap();
    let err = RunTime::new()
        .backward(&y, &feed, Some(ad::tensor([1.0, 1.0, 1.0])))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

// ---------------------------------------------------------------- inference passes

/// An identity op that counts its forward runs, to see what a pass computes.
struct Counted(std::rc::Rc<std::cell::Cell<usize>>);

impl ad::Op for Counted {
    fn type_name(&self) -> &'static str {
        "Counted"
    }
    fn infer_shape(&self, inputs: &[&ad::TensorShape]) -> ad::Result<ad::TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _: &mut ad::ForwardContext) -> ad::Result<Tensor> {
        self.0.set(self.0.get() + 1);
        Ok(inputs[0].clone())
    }
    fn backward(&self, grad: &Tensor, _: &ad::BackwardContext) -> ad::Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.clone())])
    }
}

#[test]
fn infer_matches_forward_and_keeps_no_intermediate_value() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let runs = std::rc::Rc::new(std::cell::Cell::new(0));
    let h = g
        .add_op(Counted(runs.clone()), &[&ad::exp(&x).unwrap()])
        .unwrap();
    let y = ad::reduce_sum(&(&h * 2.0), [0], false).unwrap();
    let z = &h + 1.0;
    let feed = Feed::new().with(&x, [0.0, 1.0, -1.0]).unwrap();

    let mut rt = RunTime::new();
    let want = rt.evaluate(&[&y, &z], &feed).unwrap();
    assert_eq!(runs.get(), 1);
    rt.reset();
    let got = rt.infer(&[&y, &z, &y], &feed).unwrap();
    assert_eq!(runs.get(), 2, "the shared intermediate is computed once");
    assert_eq!(got, vec![want[0].clone(), want[1].clone(), want[0].clone()]);
    for node in [&h, &y, &z, &x] {
        assert!(rt.value(node).is_err(), "{} was kept", node.name());
    }
    // Nothing back-propagates through what a pass did not keep.
    assert!(rt.backward(&y, &feed, None).is_ok()); // recomputed by forward
    rt.reset();
    assert!(rt.infer(&[], &feed).unwrap().is_empty());
}

#[test]
fn infer_uses_and_keeps_values_computed_earlier_in_the_cycle() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let runs = std::rc::Rc::new(std::cell::Cell::new(0));
    let h = g.add_op(Counted(runs.clone()), &[&x]).unwrap();
    let y = &h * 3.0;
    let feed = Feed::new().with(&x, [1.0, 2.0]).unwrap();
    let mut rt = RunTime::new();
    rt.forward(&h, &feed).unwrap();
    let got = rt.infer(&[&y], &feed).unwrap();
    assert_eq!(got[0], ad::tensor([3.0, 6.0]));
    assert_eq!(runs.get(), 1);
    assert_eq!(rt.value(&h).unwrap(), &ad::tensor([1.0, 2.0]));
    assert!(rt.value(&y).is_err());
    // Errors are those of forward: a missing feed names the placeholder.
    let other = g.placeholder([2]);
    let err = rt.infer(&[&(&other + 1.0)], &feed).unwrap_err();
    assert!(matches!(err, Error::MissingFeed { .. }), "{err}");
}
