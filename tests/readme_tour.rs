//! The README's Rust tour, line for line, with the values its comments claim.

use adgraph as ad;

#[test]
fn readme_tour() -> ad::Result<()> {
    let graph = ad::Graph::new();
    let _scope = graph.as_default();

    let a = ad::placeholder(ad::shape![None, 3]); // on the thread's default graph; None: any batch size
    let b = ad::placeholder([3]);
    let c = ad::add(&a, &b)?; // named "Add"; the next Add is "Add_0"; NumPy broadcasting
    let y = &c * &c + 1.0; // operators, with nodes, numbers and arrays
    assert_eq!(c.name(), "Add");
    assert_eq!(y.name(), "Add_0");

    let mut rt = ad::RunTime::new(); // one forward/backward cycle
    let feed = ad::feed! { a => [[0., 1., 2.], [3., 4., 5.]], b => [1., 1., 1.] }?;
    let y_val = rt.forward(&y, &feed)?.clone(); // [[2, 5, 10], [17, 26, 37]]
    assert_eq!(y_val, ad::tensor([[2., 5., 10.], [17., 26., 37.]]));
    rt.backward(&y, &feed, None)?; // upstream: all ones
    let da = rt.get_bwval(&a.name())?; // 2 (a + b)
    assert_eq!(da, &ad::tensor([[2., 4., 6.], [8., 10., 12.]]));

    // Gradients are graph nodes: run them, feed them to ops, differentiate them again.
    let s = ad::placeholder(ad::shape![]);
    let cube = &(&s * &s) * &s;
    let ds = ad::gradients(&[&cube], &[&s], None)?[0].clone().unwrap(); // 3 s^2
    let d2s = ad::gradients(&[&ds], &[&s], None)?[0].clone().unwrap(); // 6 s
    let dot = s.graph().to_dot_of(&[&d2s]); // Graphviz of what was built
    assert!(dot.starts_with("digraph"));
    let feed = ad::feed! { s => 2.0 }?;
    let values = ad::RunTime::new().infer(&[&ds, &d2s], &feed)?;
    assert_eq!(values[0].iter().next(), Some(&12.0));
    assert_eq!(values[1].iter().next(), Some(&12.0));
    Ok(())
}
