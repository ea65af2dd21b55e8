//! Curves as PNG pictures: [`plot_lines`] draws named [`Series`] of points on
//! one chart; [`window_means`] thins a long noisy curve into readable means.
//!
//! Text is drawn with the DejaVu Sans font shipped in the crate
//! (`assets/DejaVuSans.ttf`, its licence beside it), so pictures look the same
//! on any machine; [`register_font`] makes it plotters' `"sans-serif"` for
//! pictures drawn with plotters directly.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// The font every picture's text is drawn with.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the crate's DejaVu Sans as plotters' `"sans-serif"` font (once per
/// process; later calls do nothing), so that captions and labels render the
/// same on any machine.
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A font that does not parse would draw no text; it is ours and parses.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One named line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend label.
    pub name: String,
    /// The points `(x, y)`; points whose `y` is not finite are left out.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a label and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// The error of drawing `path`.
fn draw_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: format!("cannot draw the picture: {e}"),
    }
}

/// Draws `series` as lines on one chart (900 × 540 pixels, a legend, axes
/// fitted to the finite points) and writes it as a PNG to `path`; does
/// nothing where [`is_primary`](crate::train::is_primary) is false (ranks
/// other than 0 of a distributed run).
///
/// # Errors
/// [`Error::Io`] when the picture cannot be drawn or written.
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    if !crate::train::is_primary() {
        return Ok(());
    }
    draw_lines(path, title, x_label, y_label, series).map_err(|e| draw_error(path, e))
}

fn draw_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    register_font();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The means of consecutive windows of `window` points (the last window may be
/// shorter), each placed at its window's last `x`: a curve of thousands of
/// noisy steps as a readable one.
///
/// ```
/// use adgraph::train::window_means;
/// let points = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0)];
/// assert_eq!(window_means(&points, 2), vec![(2.0, 2.0), (3.0, 5.0)]);
/// ```
pub fn window_means(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .chunks(window.max(1))
        .filter_map(|c| {
            let (x, _) = *c.last()?;
            Some((x, c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64))
        })
        .collect()
}
