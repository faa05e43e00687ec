//! Results: the markdown table and the SVG plot of write throughput and p99
//! latency against connections.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::load::Outcome;
use super::scenario::{size_label, Kind, Scenario};
use super::verify::Lost;
use super::BenchError;

/// One measured scenario.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// What ran.
    pub scenario: Scenario,
    /// Successful requests per second.
    pub ops_per_s: f64,
    /// Latency percentiles of successful requests.
    pub latency_ms_p50: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// 99.9th percentile.
    pub latency_ms_p999: f64,
    /// Slowest successful request (a stall shows here first).
    pub latency_ms_max: f64,
    /// Non-2xx answers, I/O errors and 404s on pre-written keys.
    pub error_count: u64,
    /// Read-back result for scenarios that write.
    pub lost: Option<Lost>,
}

impl Row {
    /// Summarises a run.
    pub(crate) fn new(scenario: &Scenario, outcome: &Outcome, lost: Option<Lost>) -> Self {
        let secs = outcome.elapsed.as_secs_f64().max(f64::EPSILON);
        let ms = |q: f64| outcome.latency_us.value_at_quantile(q) as f64 / 1_000.0;
        Self {
            scenario: scenario.clone(),
            ops_per_s: outcome.ok_count as f64 / secs,
            latency_ms_p50: ms(0.50),
            latency_ms_p99: ms(0.99),
            latency_ms_p999: ms(0.999),
            latency_ms_max: outcome.latency_us.max() as f64 / 1_000.0,
            error_count: outcome.failed_count + outcome.io_error_count + outcome.not_found_count,
            lost,
        }
    }
}

/// The header of the results table.
pub(crate) fn table_header() -> String {
    "| scenario | conns | value | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | lost (n1/n2/n3 of sample) |\n\
     |---|--:|--:|--:|--:|--:|--:|--:|--:|--|\n"
        .to_owned()
}

/// One table line.
pub(crate) fn table_line(row: &Row) -> String {
    let lost = match &row.lost {
        Some(lost) => {
            let per_node: Vec<String> = lost.missing_per_node.iter().map(u64::to_string).collect();
            format!("{} of {}", per_node.join("/"), lost.sampled)
        }
        None => "–".to_owned(),
    };
    format!(
        "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |\n",
        row.scenario.name,
        row.scenario.connections,
        size_label(row.scenario.value_bytes),
        row.ops_per_s,
        row.latency_ms_p50,
        row.latency_ms_p99,
        row.latency_ms_p999,
        row.latency_ms_max,
        row.error_count,
        lost,
    )
}

/// The whole table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut text = table_header();
    for row in rows {
        text.push_str(&table_line(row));
    }
    text
}

/// (label, points) of one plotted line.
type Series = (String, Vec<(f64, f64)>);

/// Draws write throughput and p99 against connections, one line per value
/// size, into an SVG file. Does nothing useful with fewer than one write
/// row, but still writes a valid (empty-axes) file.
pub(crate) fn plot(rows: &[Row], path: &Path) -> Result<(), BenchError> {
    let mut throughput: Vec<Series> = Vec::new();
    let mut p99: Vec<Series> = Vec::new();
    for row in rows.iter().filter(|r| r.scenario.kind == Kind::Write) {
        let label = size_label(row.scenario.value_bytes);
        let x = row.scenario.connections as f64;
        push_point(&mut throughput, &label, (x, row.ops_per_s));
        push_point(&mut p99, &label, (x, row.latency_ms_p99));
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(500);
    panel(&left, "raftkv writes: throughput", "ops/s", &throughput)?;
    panel(&right, "raftkv writes: p99 latency", "p99 ms", &p99)?;
    root.present().map_err(plot_error)
}

fn push_point(series: &mut Vec<Series>, label: &str, point: (f64, f64)) {
    match series.iter_mut().find(|(l, _)| l == label) {
        Some((_, points)) => points.push(point),
        None => series.push((label.to_owned(), vec![point])),
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), BenchError> {
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8f64..400f64).log_scale(), 0f64..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("connections (log scale)")
        .y_desc(y_label)
        .draw()
        .map_err(plot_error)?;
    for (index, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

fn plot_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Plot(error.to_string())
}
