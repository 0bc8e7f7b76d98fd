//! Figures: a small declarative chart description rendered by plotters to SVG and PNG.
//!
//! Experiments describe *what* to draw (series, error bars, bands, axis scales); this
//! module decides *how*. Log and symmetric-log axes are drawn by transforming the data
//! and placing the tick marks at round values of the original quantity, so every
//! figure uses one coordinate type and the same code path. PNG text is rendered with
//! an embedded DejaVu Sans, so figures look the same on every machine.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::chart::{DualCoordChartContext, SeriesAnno};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::atomic;
use crate::error::{Error, Result};

/// How an axis maps data to the page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; non-positive values are dropped from the drawing.
    Log,
    /// Linear within `[-linear_width, linear_width]`, logarithmic outside: for
    /// quantities of both signs that span decades (Hessian spectra).
    SymLog {
        linear_width: f64,
    },
}

impl Scale {
    fn forward(self, x: f64) -> Option<f64> {
        match self {
            Scale::Linear => Some(x),
            Scale::Log => (x > 0.0).then(|| x.log10()),
            Scale::SymLog { linear_width } => {
                Some(x.signum() * (1.0 + x.abs() / linear_width).log10())
            }
        }
        .filter(|v| v.is_finite())
    }

    fn inverse(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => 10f64.powf(v),
            Scale::SymLog { linear_width } => {
                v.signum() * linear_width * (10f64.powf(v.abs()) - 1.0)
            }
        }
    }
}

/// One axis: its label, scale and optional fixed range (in data units).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub range: Option<(f64, f64)>,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            range: None,
        }
    }

    /// A base-10 logarithmic axis.
    pub fn log(label: impl Into<String>) -> Self {
        Axis {
            scale: Scale::Log,
            ..Axis::linear(label)
        }
    }

    /// A symmetric-log axis, linear within `±linear_width`.
    pub fn symlog(label: impl Into<String>, linear_width: f64) -> Self {
        Axis {
            scale: Scale::SymLog { linear_width },
            ..Axis::linear(label)
        }
    }

    /// Fixes the range instead of fitting it to the data.
    pub fn with_range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }
}

/// A point with a vertical error bar from `lo` to `hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorPoint {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

/// What a series draws.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesData {
    /// A polyline through the points.
    Line(Vec<(f64, f64)>),
    /// Unconnected markers.
    Markers(Vec<(f64, f64)>),
    /// Markers joined by a line, each with a vertical error bar.
    ErrorBars(Vec<ErrorPoint>),
    /// A translucent region between `lo` and `hi` over x: `(x, lo, hi)`.
    Band(Vec<(f64, f64, f64)>),
    /// Vertical lines spanning the plot at the given x positions.
    VerticalLines(Vec<f64>),
}

/// Where the legend box sits inside the plot area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LegendPosition {
    #[default]
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

impl LegendPosition {
    fn to_plotters(self) -> SeriesLabelPosition {
        match self {
            LegendPosition::UpperRight => SeriesLabelPosition::UpperRight,
            LegendPosition::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendPosition::LowerRight => SeriesLabelPosition::LowerRight,
            LegendPosition::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// One legend entry's worth of drawing.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: Option<String>,
    pub data: SeriesData,
    /// Index into the palette; series sharing a color share an index.
    pub color: usize,
    pub dashed: bool,
    /// Drawn against the secondary (right) y axis.
    pub secondary: bool,
}

/// A chart: axes plus series, rendered by [`Chart::save`].
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    /// The right-hand axis, for series marked `secondary`.
    pub y2: Option<Axis>,
    pub series: Vec<Series>,
    /// Where the legend goes (upper right unless changed).
    pub legend: LegendPosition,
}

impl Chart {
    /// An empty chart with the given title and axes.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Chart {
            title: title.into(),
            x,
            y,
            y2: None,
            series: Vec::new(),
            legend: LegendPosition::default(),
        }
    }

    /// Places the legend elsewhere than the upper right corner.
    pub fn with_legend(mut self, position: LegendPosition) -> Self {
        self.legend = position;
        self
    }

    /// Adds a secondary y axis on the right.
    pub fn with_secondary(mut self, axis: Axis) -> Self {
        self.y2 = Some(axis);
        self
    }

    /// Adds a series; returns it for styling (`.dashed()`, `.secondary()`).
    pub fn add(&mut self, label: Option<&str>, color: usize, data: SeriesData) -> &mut Series {
        self.series.push(Series {
            label: label.map(str::to_string),
            data,
            color,
            dashed: false,
            secondary: false,
        });
        self.series.last_mut().expect("series just pushed") // invariant: pushed above
    }

    /// Writes `stem.svg` and `stem.png` (atomically); returns their paths.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        save_panels(std::slice::from_ref(self), 1, stem)
    }
}

impl Series {
    /// Draws the series with a dashed line.
    pub fn dashed(&mut self) -> &mut Self {
        self.dashed = true;
        self
    }

    /// Draws the series against the secondary y axis.
    pub fn secondary(&mut self) -> &mut Self {
        self.secondary = true;
        self
    }
}

const PANEL_SIZE: (u32, u32) = (800, 560);

/// Writes several charts as one figure, `columns` panels per row, as `stem.svg` and
/// `stem.png`; returns their paths.
pub fn save_panels(charts: &[Chart], columns: usize, stem: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let columns = columns.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(columns).max(1);
    let size = (PANEL_SIZE.0 * columns as u32, PANEL_SIZE.1 * rows as u32);

    let svg_path = stem.with_extension("svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_panels(&root, charts, rows, columns)?;
        root.present().map_err(plot_error)?;
    }
    atomic::write_bytes(&svg_path, svg.as_bytes())?;

    let png_path = stem.with_extension("png");
    atomic::write_via_path(&png_path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        draw_panels(&root, charts, rows, columns)?;
        root.present().map_err(plot_error)
    })?;
    Ok(vec![svg_path, png_path])
}

fn draw_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    charts: &[Chart],
    rows: usize,
    columns: usize,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_error)?;
    let areas = root.split_evenly((rows, columns));
    for (chart, area) in charts.iter().zip(areas.iter()) {
        draw_chart(chart, area)?;
    }
    Ok(())
}

/// The palette (matplotlib's tab10), indexed modulo its length.
fn color(index: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[index % TAB10.len()];
    RGBColor(r, g, b)
}

/// A linear coordinate (in transformed units) whose tick marks are chosen by
/// [`ticks`] instead of plotters' evenly spaced defaults.
struct Coord {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Coord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.max_num_points() >= self.ticks.len() {
            self.ticks.clone()
        } else {
            thin(self.ticks.clone(), hint.max_num_points().max(2))
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

fn draw_chart<DB: DrawingBackend>(chart: &Chart, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let primary: Vec<&Series> = chart.series.iter().filter(|s| !s.secondary).collect();
    let secondary: Vec<&Series> = chart.series.iter().filter(|s| s.secondary).collect();
    let x_range = fit_range(&chart.x, chart.series.iter().flat_map(|s| xs(&s.data)));
    let y_range = fit_range(&chart.y, primary.iter().flat_map(|s| ys(&s.data)));

    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(78);
    if chart.y2.is_some() {
        builder.right_y_label_area_size(78);
    }
    let ctx = builder
        .build_cartesian_2d(
            axis_coord(&chart.x, x_range.clone()),
            axis_coord(&chart.y, y_range.clone()),
        )
        .map_err(plot_error)?;
    let frame = Frame {
        x: chart.x.scale,
        y: chart.y.scale,
        y_range,
    };
    let Some(axis2) = &chart.y2 else {
        let mut ctx = ctx;
        configure_primary_axes(&mut ctx, chart)?;
        for series in &primary {
            draw_series(&mut ctx, series, &frame)?;
        }
        return draw_legend(&mut ctx, chart.legend);
    };

    // The secondary coordinate must exist before the primary mesh is drawn: it takes
    // over the right-hand label area, which the primary axis would otherwise use too.
    let y2_range = fit_range(axis2, secondary.iter().flat_map(|s| ys(&s.data)));
    let y2_scale = axis2.scale;
    let mut dual = ctx.set_secondary_coord(
        axis_coord(&chart.x, x_range),
        axis_coord(axis2, y2_range.clone()),
    );
    configure_primary_axes(&mut dual, chart)?;
    dual.configure_secondary_axes()
        .y_desc(axis2.label.as_str())
        .y_label_formatter(&|v| tick_label(y2_scale.inverse(*v)))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(plot_error)?;
    for series in &primary {
        draw_series(&mut dual, series, &frame)?;
    }
    let frame2 = Frame {
        x: chart.x.scale,
        y: y2_scale,
        y_range: y2_range,
    };
    for series in &secondary {
        draw_secondary_series(&mut dual, series, &frame2)?;
    }
    draw_legend(&mut dual, chart.legend)
}

fn configure_primary_axes<'a, DB: DrawingBackend + 'a>(
    ctx: &mut ChartContext<'a, DB, Cartesian2d<Coord, Coord>>,
    chart: &Chart,
) -> Result<()> {
    let (x_scale, y_scale) = (chart.x.scale, chart.y.scale);
    ctx.configure_mesh()
        .x_desc(chart.x.label.as_str())
        .y_desc(chart.y.label.as_str())
        .x_label_formatter(&|v| tick_label(x_scale.inverse(*v)))
        .y_label_formatter(&|v| tick_label(y_scale.inverse(*v)))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)
}

/// The scales of the axes a series is drawn against, and the visible y range (for
/// vertical lines).
struct Frame {
    x: Scale,
    y: Scale,
    y_range: Range<f64>,
}

impl Frame {
    fn point(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        Some((self.x.forward(x)?, self.y.forward(y)?))
    }

    /// The lower end of an error bar or band: a value a log axis cannot show (an
    /// interval reaching zero or below) is drawn at the bottom of the plot.
    fn lower_y(&self, y: f64) -> Option<f64> {
        match self.y.forward(y) {
            Some(v) => Some(v),
            None if y.is_finite() => Some(self.y_range.start),
            None => None,
        }
    }
}

/// Generates `draw_series`/`draw_secondary_series`: plotters gives the two y axes
/// different chart types, so one body is stamped out for each.
macro_rules! series_drawer {
    ($name:ident, $ctx:ty, $method:ident) => {
        fn $name<DB: DrawingBackend>(ctx: &mut $ctx, series: &Series, frame: &Frame) -> Result<()> {
            let c = color(series.color);
            let stroke = ShapeStyle::from(&c).stroke_width(2);
            let label = series.label.clone();
            // The legend sample is dashed for dashed series (a dash longer than the
            // sample draws it solid), so the legend tells the line styles apart.
            let dash = if series.dashed { 6 } else { 100 };
            let legend = |anno: &mut SeriesAnno<'_, DB>| {
                if let Some(label) = &label {
                    anno.label(label.clone()).legend(move |(x, y)| {
                        DashedPathElement::new(
                            vec![(x, y), (x + 22, y)],
                            dash,
                            4,
                            ShapeStyle::from(&c).stroke_width(3),
                        )
                    });
                }
            };
            match &series.data {
                SeriesData::Line(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, y)| frame.point(x, y))
                        .collect();
                    let anno = if series.dashed {
                        ctx.$method(DashedLineSeries::new(pts, 8, 5, stroke))
                    } else {
                        ctx.$method(LineSeries::new(pts, stroke))
                    }
                    .map_err(plot_error)?;
                    legend(anno);
                }
                SeriesData::Markers(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, y)| frame.point(x, y))
                        .collect();
                    let anno = ctx
                        .$method(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                        .map_err(plot_error)?;
                    legend(anno);
                }
                SeriesData::ErrorBars(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|p| frame.point(p.x, p.y))
                        .collect();
                    let anno = ctx
                        .$method(LineSeries::new(pts.clone(), stroke))
                        .map_err(plot_error)?;
                    legend(anno);
                    ctx.$method(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                        .map_err(plot_error)?;
                    let bars: Vec<_> = points
                        .iter()
                        .filter_map(|p| {
                            let (x, _) = frame.point(p.x, p.y)?;
                            let lo = frame.lower_y(p.lo.min(p.hi))?;
                            let hi = frame.y.forward(p.hi.max(p.lo))?;
                            Some(ErrorBar::new_vertical(
                                x,
                                lo,
                                (lo + hi) / 2.0,
                                hi,
                                stroke,
                                8,
                            ))
                        })
                        .collect();
                    ctx.$method(bars).map_err(plot_error)?;
                }
                SeriesData::Band(points) => {
                    let upper: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, _, hi)| frame.point(x, hi))
                        .collect();
                    let lower: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, lo, _)| Some((frame.x.forward(x)?, frame.lower_y(lo)?)))
                        .collect();
                    let polygon: Vec<_> =
                        upper.into_iter().chain(lower.into_iter().rev()).collect();
                    let anno = ctx
                        .$method(std::iter::once(Polygon::new(polygon, c.mix(0.18).filled())))
                        .map_err(plot_error)?;
                    if let Some(label) = series.label.clone() {
                        anno.label(label).legend(move |(x, y)| {
                            Rectangle::new([(x, y - 5), (x + 20, y + 5)], c.mix(0.3).filled())
                        });
                    }
                }
                SeriesData::VerticalLines(xs) => {
                    let lines: Vec<_> = xs
                        .iter()
                        .filter_map(|&x| frame.x.forward(x))
                        .map(|x| vec![(x, frame.y_range.start), (x, frame.y_range.end)])
                        .collect();
                    let mut first = true;
                    for line in lines {
                        let anno = if series.dashed {
                            ctx.$method(DashedLineSeries::new(line, 6, 4, stroke))
                        } else {
                            ctx.$method(LineSeries::new(line, stroke))
                        }
                        .map_err(plot_error)?;
                        if std::mem::take(&mut first) {
                            legend(anno);
                        }
                    }
                }
            }
            Ok(())
        }
    };
}

series_drawer!(
    draw_series,
    ChartContext<'_, DB, Cartesian2d<Coord, Coord>>,
    draw_series
);
series_drawer!(
    draw_secondary_series,
    DualCoordChartContext<'_, DB, Cartesian2d<Coord, Coord>, Cartesian2d<Coord, Coord>>,
    draw_secondary_series
);

fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    ctx: &mut ChartContext<'a, DB, CT>,
    position: LegendPosition,
) -> Result<()> {
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 14))
        .position(position.to_plotters())
        .draw()
        .map_err(plot_error)
}

fn xs(data: &SeriesData) -> Vec<f64> {
    match data {
        SeriesData::Line(p) | SeriesData::Markers(p) => p.iter().map(|q| q.0).collect(),
        SeriesData::ErrorBars(p) => p.iter().map(|q| q.x).collect(),
        SeriesData::Band(p) => p.iter().map(|q| q.0).collect(),
        SeriesData::VerticalLines(x) => x.clone(),
    }
}

fn ys(data: &SeriesData) -> Vec<f64> {
    match data {
        SeriesData::Line(p) | SeriesData::Markers(p) => p.iter().map(|q| q.1).collect(),
        SeriesData::ErrorBars(p) => p.iter().flat_map(|q| [q.y, q.lo, q.hi]).collect(),
        SeriesData::Band(p) => p.iter().flat_map(|q| [q.1, q.2]).collect(),
        SeriesData::VerticalLines(_) => Vec::new(),
    }
}

/// The drawn range of an axis in transformed units: the fixed range, or the data's
/// extent with 5% padding (a unit range around a single value).
fn fit_range(axis: &Axis, values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = match axis.range {
        Some((lo, hi)) => (
            axis.scale.forward(lo).unwrap_or(-1.0),
            axis.scale.forward(hi).unwrap_or(1.0),
        ),
        None => {
            let (lo, hi) = values
                .filter_map(|v| axis.scale.forward(v))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            if !lo.is_finite() {
                (0.0, 1.0)
            } else {
                let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
                (lo - pad, hi + pad)
            }
        }
    };
    if hi > lo { lo..hi } else { lo - 0.5..lo + 0.5 }
}

/// The coordinate of an axis over `range` (transformed units) with tick marks at
/// round values of the original quantity.
fn axis_coord(axis: &Axis, range: Range<f64>) -> Coord {
    Coord {
        ticks: ticks(axis.scale, &range),
        inner: range.into(),
    }
}

/// Tick positions (transformed units) inside `range`: 1-2-5 steps on linear axes,
/// powers of ten on log axes, zero and signed powers of ten on symlog axes.
fn ticks(scale: Scale, range: &Range<f64>) -> Vec<f64> {
    let inside = |v: &f64| *v >= range.start - 1e-9 && *v <= range.end + 1e-9;
    match scale {
        Scale::Linear => linear_ticks(range),
        Scale::Log => {
            let decades: Vec<f64> = (range.start.ceil() as i64..=range.end.floor() as i64)
                .map(|k| k as f64)
                .collect();
            if decades.len() >= 2 {
                thin(decades, 10)
            } else {
                // Less than a decade: round values of the quantity itself.
                let data = 10f64.powf(range.start)..10f64.powf(range.end);
                linear_ticks(&data)
                    .into_iter()
                    .filter_map(|v| scale.forward(v))
                    .collect()
            }
        }
        Scale::SymLog { linear_width } => {
            let max_abs = scale.inverse(range.start.abs().max(range.end.abs()));
            let top = max_abs.log10().floor() as i64;
            let mut values = vec![0.0];
            for k in (top - 12..=top).rev() {
                let v = 10f64.powi(k as i32);
                // Powers of ten well inside the linear part all land next to 0.
                if v < 0.5 * linear_width {
                    continue;
                }
                values.push(v);
                values.push(-v);
            }
            let mut t: Vec<f64> = values
                .into_iter()
                .filter_map(|v| scale.forward(v))
                .filter(inside)
                .collect();
            t.sort_by(f64::total_cmp);
            thin(t, 11)
        }
    }
}

fn linear_ticks(range: &Range<f64>) -> Vec<f64> {
    let span = range.end - range.start;
    let raw = span / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (range.start / step).ceil() as i64;
    let last = (range.end / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Keeps at most `max` evenly spaced entries (always including the first).
fn thin(values: Vec<f64>, max: usize) -> Vec<f64> {
    let stride = values.len().div_ceil(max).max(1);
    values.into_iter().step_by(stride).collect()
}

/// A compact tick label: plain decimals for moderate values, `1e-4` style otherwise.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".to_string()
    } else if (1e-2..1e4).contains(&a) {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let exponent = a.log10().floor() as i32;
        let mantissa = v / 10f64.powi(exponent);
        if (mantissa.abs() - 1.0).abs() < 1e-6 {
            format!("{}1e{exponent}", if v < 0.0 { "-" } else { "" })
        } else {
            format!("{mantissa:.1}e{exponent}")
        }
    }
}

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    const DEJAVU: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Numerical(
            "the embedded font could not be loaded".into(),
        ))
    }
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Numerical(format!("drawing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn log_ticks_sit_on_decades() {
        let t = ticks(Scale::Log, &(-3.2..0.4));
        assert_eq!(t, vec![-3.0, -2.0, -1.0, 0.0]);
        assert_eq!(tick_label(Scale::Log.inverse(-3.0)), "1e-3");
        assert_eq!(tick_label(0.05), "0.05");
    }

    #[test]
    fn log_axes_draw_non_positive_interval_ends_at_the_bottom() {
        let frame = Frame {
            x: Scale::Log,
            y: Scale::Log,
            y_range: -2.0..3.0,
        };
        assert_eq!(frame.lower_y(-5.0), Some(-2.0));
        assert_eq!(frame.lower_y(0.0), Some(-2.0));
        assert_eq!(frame.lower_y(100.0), Some(2.0));
        assert_eq!(frame.lower_y(f64::NAN), None);
    }

    #[test]
    fn symlog_round_trips() -> TestResult {
        let s = Scale::SymLog { linear_width: 0.1 };
        for x in [-20.0, -0.03, 0.0, 0.5, 1e4] {
            let y = s
                .forward(x)
                .ok_or_else(|| format!("no symlog image of {x}"))?;
            assert!((s.inverse(y) - x).abs() <= 1e-9 * x.abs().max(1.0));
        }
        Ok(())
    }

    #[test]
    fn charts_render_to_svg_and_png() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut chart = Chart::new("test", Axis::log("p"), Axis::log("lambda"))
            .with_secondary(Axis::log("eta"))
            .with_legend(LegendPosition::LowerLeft);
        chart.add(
            Some("measured"),
            0,
            SeriesData::ErrorBars(vec![
                ErrorPoint {
                    x: 0.01,
                    y: 1.0,
                    lo: 0.8,
                    hi: 1.2,
                },
                ErrorPoint {
                    x: 1.0,
                    y: 100.0,
                    lo: 90.0,
                    hi: 110.0,
                },
            ]),
        );
        chart
            .add(
                Some("theory"),
                1,
                SeriesData::Line(vec![(0.01, 1.0), (1.0, 100.0)]),
            )
            .dashed();
        chart.add(
            Some("band"),
            2,
            SeriesData::Band(vec![(0.01, 0.5, 2.0), (1.0, 50.0, 200.0)]),
        );
        chart
            .add(
                Some("eta"),
                3,
                SeriesData::Line(vec![(0.01, 2.0), (1.0, 0.02)]),
            )
            .secondary();
        let paths = chart.save(&dir.path().join("fig"))?;
        let svg = std::fs::read_to_string(&paths[0])?;
        assert!(svg.contains("measured") && svg.contains("0.01"));
        let png = std::fs::read(&paths[1])?;
        assert_eq!(&png[1..4], b"PNG");
        Ok(())
    }
}
