//! SVG charts of a [`Report`] (plotters, SVG backend: no font files or system libraries
//! needed; the viewer renders the text).
//!
//! - `throughput.svg`: one bar panel per rate phase (higher is better);
//! - `costs.svg`: one bar panel per time or space phase (lower is better);
//! - `durable_renew.svg`: durable renewals per second and p99 latency against the number of
//!   concurrent tasks, one line per subject: group commit shows as a rising line.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Report, Row};

/// Width and height of one panel, pixels.
const PANEL: (u32, u32) = (460, 320);

/// The color of subject `i`, the same in every chart.
fn color(i: usize) -> PaletteColor<Palette99> {
    Palette99::pick(i)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// Draws `rows` as a grid of bar panels into `path`.
fn bar_panels(path: &Path, title: &str, report: &Report, rows: &[&Row]) -> Result<(), String> {
    let cols = rows.len().clamp(1, 3);
    let grid_rows = rows.len().div_ceil(cols).max(1);
    let size = (PANEL.0 * cols as u32, PANEL.1 * grid_rows as u32 + 40);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
    let names = &report.subjects;
    for (area, row) in root.split_evenly((grid_rows, cols)).iter().zip(rows) {
        let max = row.values.iter().flatten().copied().fold(0f64, f64::max);
        let top = if max > 0.0 { max * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} ({}, {})",
                    row.phase,
                    row.unit,
                    if row.higher_is_better {
                        "higher is better"
                    } else {
                        "lower is better"
                    }
                ),
                ("sans-serif", 14),
            )
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(64)
            // `a..b` segmented has a segment per value of a..=b: one per subject.
            .build_cartesian_2d((0..names.len() - 1).into_segmented(), 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len())
            .x_label_style(("sans-serif", 11))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(row.unit.as_str())
            .y_label_formatter(&|v| short_number(*v))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(row.values.iter().enumerate().filter_map(|(i, v)| {
                let v = (*v)?;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    color(i).filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                Some(bar)
            }))
            .map_err(err)?;
        // The value above each bar; `n/a` where the phase does not apply.
        chart
            .draw_series(row.values.iter().enumerate().map(|(i, v)| {
                let (y, label) = match v {
                    Some(v) => (*v, short_number(*v)),
                    None => (0.0, "n/a".to_string()),
                };
                Text::new(
                    label,
                    (SegmentValue::CenterOf(i), y + top * 0.01),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// `1234567` as `1.23M`, `12345` as `12.3k`; small values with two decimals.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Durable renewals per second and p99 latency against concurrency, one line per subject.
fn renew_chart(path: &Path, report: &Report) -> Result<(), String> {
    let series = |latency: bool| -> Vec<(usize, Vec<(f64, f64)>)> {
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.tasks.is_some() && r.phase.starts_with("durable_renew"))
            .filter(|r| match latency {
                true => r.phase.ends_with("p99"),
                false => r.higher_is_better,
            })
            .collect();
        (0..report.subjects.len())
            .map(|i| {
                let points = rows
                    .iter()
                    .filter_map(|r| Some(((r.tasks? as f64).log2(), r.values[i]?)))
                    .collect();
                (i, points)
            })
            .collect()
    };
    let root = SVGBackend::new(path, (PANEL.0 * 2 + 200, PANEL.1 + 120)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "durable_renew: each renewal durable before it returns",
            ("sans-serif", 22),
        )
        .map_err(err)?;
    let panels = root.split_evenly((1, 2));
    for (area, (latency, label)) in panels
        .iter()
        .zip([(false, "renewals per second"), (true, "p99 latency, ms")])
    {
        let data = series(latency);
        let max_y = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .fold(0f64, f64::max);
        // x is log2(tasks), labelled with the task count.
        let max_x = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
            .fold(1f64, f64::max)
            .ceil();
        let mut chart = ChartBuilder::on(area)
            .caption(label, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.2f64..max_x + 0.2, 0f64..(max_y * 1.15).max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent tasks")
            .y_desc(label)
            .x_labels(max_x as usize + 1)
            .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
            .light_line_style(WHITE)
            .y_label_formatter(&|v| short_number(*v))
            .draw()
            .map_err(err)?;
        for (i, points) in data {
            if points.is_empty() {
                continue;
            }
            let c = color(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(report.subjects[i].clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Writes `throughput.svg`, `costs.svg` and `durable_renew.svg` into `dir`; returns their
/// paths.
pub fn write_charts(report: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let rates: Vec<&Row> = report.rows.iter().filter(|r| r.higher_is_better).collect();
    let costs: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| !r.higher_is_better && r.tasks.is_none())
        .collect();
    let paths = [
        dir.join("throughput.svg"),
        dir.join("costs.svg"),
        dir.join("durable_renew.svg"),
    ];
    bar_panels(
        &paths[0],
        &format!("Lease workload, N = {}: throughput", report.n),
        report,
        &rates,
    )?;
    bar_panels(
        &paths[1],
        &format!("Lease workload, N = {}: time and space", report.n),
        report,
        &costs,
    )?;
    renew_chart(&paths[2], report)?;
    Ok(paths.to_vec())
}
