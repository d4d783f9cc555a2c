//! Loss and accuracy curves as SVG and PNG, drawn with plotters and a font
//! shipped in the tree (`assets/DejaVuSansMono.ttf`, DejaVu licence), so no
//! system library or font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
static REGISTER: Once = Once::new();

/// One named curve: `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// The points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A panel of curves sharing axes.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("plot: {e}"))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    panels: &[Panel],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    for (area, panel) in areas.iter().zip(panels) {
        let pts = panel.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        // Bounds from the drawable points: finite and small enough that the
        // span and its padding stay finite (plotters never finishes laying
        // out the ticks of an infinite axis).
        const LIMIT: f64 = 1e300;
        for &(x, y) in pts {
            if x.abs() <= LIMIT && y.abs() <= LIMIT {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(panel.y_label.as_str())
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.abs() <= LIMIT && y.abs() <= LIMIT),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)
}

/// Writes the panels side by side to `stem.svg` and `stem.png`.
pub fn write_curves(stem: &Path, panels: &[Panel]) -> Result<()> {
    REGISTER.call_once(|| {
        // The bundled font is valid; a failure would only leave text unrendered.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let size = (420 * panels.len().max(1) as u32, 340);
    let svg = stem.with_extension("svg");
    draw(SVGBackend::new(&svg, size).into_drawing_area(), panels)?;
    let png = stem.with_extension("png");
    draw(BitMapBackend::new(&png, size).into_drawing_area(), panels)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg_and_png() {
        let dir = std::env::temp_dir().join(format!("anneal-plot-{}", std::process::id()));
        let stem = dir.join("curves");
        let s = |l: &str, k: f64| Series {
            label: l.into(),
            points: (0..5).map(|i| (i as f64, k / (1.0 + i as f64))).collect(),
        };
        write_curves(
            &stem,
            &[Panel {
                title: "loss".into(),
                y_label: "loss".into(),
                series: vec![s("train", 1.0), s("test", 1.2)],
            }],
        )
        .unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("train"));
        let png = std::fs::read(stem.with_extension("png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
