//! The results a distributed run leaves to rank 0: with `train::set_primary(false)`
//! (what `adgraph::distributed::Distributed::init` sets on ranks other than 0),
//! `plot_lines` draws nothing and `report` prints nothing. Its own binary: the
//! flag is process-wide, and other tests draw pictures.

use adgraph::train::{is_primary, plot_lines, set_primary, Series};

#[test]
fn only_the_primary_process_writes_pictures() {
    let dir = std::env::temp_dir().join(format!("adgraph-primary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let series = [Series::new("loss", vec![(1.0, 2.0), (2.0, 1.0)])];
    assert!(is_primary(), "a process is primary unless told otherwise");

    set_primary(false);
    let quiet = dir.join("quiet.png");
    plot_lines(&quiet, "t", "x", "y", &series).unwrap();
    assert!(
        !quiet.exists(),
        "a non-primary process drew {}",
        quiet.display()
    );

    set_primary(true);
    let drawn = dir.join("drawn.png");
    plot_lines(&drawn, "t", "x", "y", &series).unwrap();
    assert!(
        drawn.exists(),
        "the primary process did not draw {}",
        drawn.display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
