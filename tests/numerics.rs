//! The numerics check names the first node whose value or gradient holds NaN or
//! infinity; it is off by default. The profiler times every op node.

use adgraph::{self as ad, Error, Feed, Graph, Phase, RunTime};

fn checked() -> RunTime {
    let mut rt = RunTime::new();
    rt.set_check_numerics(true);
    rt
}

#[test]
fn log_of_zero_is_caught_in_forward() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = ad::log(&x).unwrap();
    let z = &y * 2.0; // downstream of the first bad node
    let feed = Feed::new().with(&x, [1.0, 0.0, 2.0]).unwrap();
    let err = checked().forward(&z, &feed).unwrap_err();
    match err {
        Error::Numerics {
            node,
            op,
            phase,
            bad,
            total,
            ..
        } => {
            assert_eq!((node.as_str(), op.as_str()), ("Log", "Log"));
            assert_eq!((phase, bad, total), (Phase::Forward, 1, 3));
        }
        other => panic!("{other}"),
    }
    // Off by default: the same run gives -inf silently, like NumPy.
    let v = RunTime::new().forward(&y, &feed).unwrap().clone();
    assert_eq!(v[1], f32::NEG_INFINITY);
}

#[test]
fn division_by_zero_is_caught() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = g.placeholder([2]);
    let z = ad::divide(&x, &y).unwrap();
    let feed = ad::feed! { x => [1.0, 0.0], y => [0.0, 0.0] }.unwrap();
    let err = checked().forward(&z, &feed).unwrap_err();
    // 1/0 = inf and 0/0 = NaN: both counted.
    assert!(
        matches!(err, Error::Numerics { ref node, bad: 2, .. } if node == "Divide"),
        "{err}"
    );
}

#[test]
fn overflowing_exp_is_caught() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = ad::exp(&x).unwrap();
    let feed = Feed::new().with(&x, [1.0, 100.0]).unwrap();
    let err = checked().forward(&y, &feed).unwrap_err();
    assert!(
        matches!(err, Error::Numerics { ref node, bad: 1, .. } if node == "Exp"),
        "{err}"
    );
}

#[test]
fn a_bad_gradient_is_caught_in_backward() {
    // sqrt is finite at 0 but its gradient 1/(2 sqrt x) is not.
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = ad::sqrt(&x).unwrap();
    let feed = Feed::new().with(&x, [0.0, 4.0]).unwrap();
    let err = checked().backward(&y, &feed, None).unwrap_err();
    let message = err.to_string();
    match err {
        Error::Numerics {
            node,
            op,
            phase,
            what,
            bad,
            total,
        } => {
            // Reported at the forward node whose gradient holds the infinity.
            assert_eq!(
                (node.as_str(), op.as_str(), phase, bad, total),
                ("Sqrt", "Sqrt", Phase::Backward, 1, 2),
                "{message}"
            );
            // Backward runs the gradient graph, so the infinity is met
            // computing a gradient node (sqrt's `SqrtGrad`, in the `gradients/`
            // scope): `what` names that node and its op, where it used to name
            // the input whose gradient it was.
            let culprit = g
                .nodes()
                .into_iter()
                .find(|n| {
                    n.is_gradient() && what.contains(&format!("{} ({})", n.name(), n.op_type()))
                })
                .unwrap_or_else(|| panic!("no gradient node named in: {message}"));
            assert!(culprit.name().starts_with("gradients/"), "{message}");
            // It is part of sqrt's gradient: it reads the Sqrt node.
            assert!(culprit.inputs().contains(&y), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_bad_upstream_gradient_is_caught_at_the_target() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = ad::exp(&x).unwrap();
    let feed = Feed::new().with(&x, [0.0, 1.0]).unwrap();
    let upstream = ad::tensor([1.0, f32::INFINITY]);
    let err = checked().backward(&y, &feed, Some(upstream)).unwrap_err();
    match err {
        Error::Numerics {
            node,
            phase,
            what,
            bad,
            ..
        } => {
            assert_eq!((node.as_str(), phase, bad), ("Exp", Phase::Backward, 1));
            assert!(what.contains("upstream"), "{what}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_nan_fed_is_caught_at_the_placeholder() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = &x + 1.0;
    let feed = Feed::new().with(&x, [f32::NAN, 1.0]).unwrap();
    let err = checked().forward(&y, &feed).unwrap_err();
    assert!(
        matches!(err, Error::Numerics { ref node, .. } if node == "Placeholder"),
        "{err}"
    );
}

#[test]
fn profiler_times_forward_and_backward_of_every_op() {
    let g = Graph::new();
    let x = g.placeholder([8, 8]);
    let w = g.variable_from(ad::Tensor::ones(vec![8, 8]), true).unwrap();
    let y = ad::relu(&ad::matmul(&x, &w).unwrap()).unwrap();
    let loss = ad::reduce_mean(&y, ad::Axes::All, false).unwrap();
    let feed = Feed::new().with(&x, ad::Tensor::ones(vec![8, 8])).unwrap();
    let mut rt = RunTime::new();
    assert!(rt.profile().is_none());
    rt.enable_profiling(true);
    for _ in 0..4 {
        rt.forward_backward_cycle(|rt| rt.backward(&loss, &feed, None))
            .unwrap();
    }
    let profile = rt.profile().unwrap();
    let ops: Vec<&str> = profile.records().iter().map(|r| r.op).collect();
    assert_eq!(ops, ["MatMul", "Relu", "ReduceMean"]);
    assert!(profile.records().iter().all(|r| r.calls == 4));
    assert!(profile.records()[0]
        .shapes
        .contains("[8, 8] [8, 8] -> [8, 8]"));
    let table = profile.top(2).to_string();
    assert_eq!(profile.top(2).records().len(), 2);
    assert!(table.contains("fwd ms"), "{table}");
    assert_eq!(profile.by_op_type().len(), 3);
}

#[test]
fn large_values_are_counted_exactly() {
    // 400×400 values: over the size at which the check splits its work over threads.
    let g = Graph::new();
    let x = g.placeholder([400, 400]);
    let y = ad::log(&x).unwrap(); // log(0) = log(-0) = -inf, log(-1) = NaN
    let mut v = ad::tensor::full(&[400, 400], 1.0);
    v[[0, 3]] = 0.0;
    v[[200, 7]] = -0.0;
    v[[399, 399]] = -1.0;
    let feed = Feed::new().with(&x, v).unwrap();
    let err = checked().forward(&y, &feed).unwrap_err();
    assert!(
        matches!(err, Error::Numerics { ref node, bad: 3, total: 160_000, .. } if node == "Log"),
        "{err}"
    );
}
