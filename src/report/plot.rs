//! Figures: a small declarative chart description rendered by plotters to SVG and PNG.
//!
//! Experiments describe *what* to draw (series, error bars, bands, axis scales); this
//! module decides *how*. Log and symmetric-log axes are drawn by transforming the data
//! and placing the tick marks at round values of the original quantity, so every
//! figure uses one coordinate type and the same code path. PNG text is rendered with
//! an embedded DejaVu Sans, so figures look the same on every machine.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::chart::DualCoordChartContext;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

/// The corner of the plot area the legend box prefers. A legend never covers
/// data: when something is drawn under the preferred corner's box, the first
/// empty corner of the others is taken (upper right, upper left, lower right,
/// lower left), and when none is empty the legend goes below the axes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LegendPosition {
    #[default]
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

impl LegendPosition {
    const ALL: [LegendPosition; 4] = [
        LegendPosition::UpperRight,
        LegendPosition::UpperLeft,
        LegendPosition::LowerRight,
        LegendPosition::LowerLeft,
    ];

    /// The top-left corner of a `(w, h)` box in this corner of a `size` plot
    /// area, `LEGEND_INSET` pixels from its sides.
    fn origin(self, size: (f64, f64), (w, h): (f64, f64)) -> (f64, f64) {
        let right = size.0 - LEGEND_INSET - w;
        let bottom = size.1 - LEGEND_INSET - h;
        match self {
            LegendPosition::UpperRight => (right, LEGEND_INSET),
            LegendPosition::UpperLeft => (LEGEND_INSET, LEGEND_INSET),
            LegendPosition::LowerRight => (right, bottom),
            LegendPosition::LowerLeft => (LEGEND_INSET, bottom),
        }
    }
}

/// Pixels between a legend box inside the plot and the plot's sides.
const LEGEND_INSET: f64 = 8.0;
/// Pixels of clearance a legend box keeps from the data.
const LEGEND_CLEARANCE: f64 = 3.0;

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
pub(super) fn color(index: usize) -> RGBColor {
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
pub(super) struct Coord {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Coord {
    /// Replaces the tick marks (transformed units), e.g. by a colour bar's levels.
    pub(super) fn set_ticks(&mut self, ticks: Vec<f64>) {
        self.ticks = ticks;
    }
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
    let body = area
        .margin(12, 12, 12, 12)
        .titled(&chart.title, ("sans-serif", 22))
        .map_err(plot_error)?;
    let entries = legend_entries(chart);
    if entries.is_empty() {
        return draw_axes_and_series(chart, &body, None);
    }
    let boxed = legend_layout(&body, &entries, 0)?;
    let (size, obstacles) = chart_obstacles(chart, &body)?;
    let box_size = (f64::from(boxed.width), f64::from(boxed.height));
    match legend_corner(size, box_size, &obstacles, chart.legend) {
        Some(corner) => {
            let origin = corner.origin(size, box_size);
            draw_axes_and_series(chart, &body, Some((&entries, &boxed, origin)))
        }
        None => {
            // Below the axes, in as many columns as fit.
            let (w, h) = body.dim_in_pixel();
            let wide = legend_layout(&body, &entries, w.saturating_sub(20))?;
            let (top, bottom) = body.split_vertically(h.saturating_sub(wide.height + 8));
            draw_axes_and_series(chart, &top, None)?;
            let x = (w.saturating_sub(wide.width) / 2) as i32;
            draw_legend_entries(&bottom, &entries, &wide, (x, 4))
        }
    }
}

/// The ranges the axes will span (transformed units): x, primary y, and the
/// secondary y when there is one.
fn chart_ranges(chart: &Chart) -> (Range<f64>, Range<f64>, Option<Range<f64>>) {
    let x = fit_range(&chart.x, chart.series.iter().flat_map(|s| xs(&s.data)));
    let y = fit_range(
        &chart.y,
        chart
            .series
            .iter()
            .filter(|s| !s.secondary)
            .flat_map(|s| ys(&s.data)),
    );
    let y2 = chart.y2.as_ref().map(|axis| {
        fit_range(
            axis,
            chart
                .series
                .iter()
                .filter(|s| s.secondary)
                .flat_map(|s| ys(&s.data)),
        )
    });
    (x, y, y2)
}

fn chart_builder<'a, 'b, DB: DrawingBackend>(
    chart: &Chart,
    area: &'a DrawingArea<DB, Shift>,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder.x_label_area_size(48).y_label_area_size(78);
    if chart.y2.is_some() {
        builder.right_y_label_area_size(78);
    }
    builder
}

/// The plot area's size in pixels as the chart will be drawn on `area`, and what
/// its series draw there, in pixels from its top-left corner (without drawing
/// anything: building a chart on an area draws nothing until its mesh or series
/// are drawn).
fn chart_obstacles<DB: DrawingBackend>(
    chart: &Chart,
    area: &DrawingArea<DB, Shift>,
) -> Result<((f64, f64), Vec<Obstacle>)> {
    let (x_range, y_range, y2_range) = chart_ranges(chart);
    let ctx = chart_builder(chart, area)
        .build_cartesian_2d(
            axis_coord(&chart.x, x_range.clone()),
            axis_coord(&chart.y, y_range.clone()),
        )
        .map_err(plot_error)?;
    let (w, h) = ctx.plotting_area().dim_in_pixel();
    let size = (f64::from(w), f64::from(h));
    let mut obstacles = Vec::new();
    for series in &chart.series {
        let (scale, range) = match (&chart.y2, &y2_range, series.secondary) {
            (Some(axis), Some(range), true) => (axis.scale, range.clone()),
            _ => (chart.y.scale, y_range.clone()),
        };
        let frame = Frame {
            x: chart.x.scale,
            y: scale,
            y_range: range.clone(),
        };
        let pixels = PixelMap {
            x: x_range.clone(),
            y: range,
            size,
        };
        obstacles.extend(series_obstacles(&series.data, &frame, &pixels));
    }
    Ok((size, obstacles))
}

/// Draws the axes and the series on `area`, with the legend inside the plot area
/// at `origin` (pixels from its top-left corner) when given.
fn draw_axes_and_series<DB: DrawingBackend>(
    chart: &Chart,
    area: &DrawingArea<DB, Shift>,
    legend: Option<(&[LegendEntry], &LegendLayout, (f64, f64))>,
) -> Result<()> {
    let primary: Vec<&Series> = chart.series.iter().filter(|s| !s.secondary).collect();
    let secondary: Vec<&Series> = chart.series.iter().filter(|s| s.secondary).collect();
    let (x_range, y_range, y2_range) = chart_ranges(chart);
    let ctx = chart_builder(chart, area)
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
    let draw_legend = |plot: &DrawingArea<DB, Shift>| match legend {
        Some((entries, layout, (x, y))) => {
            draw_legend_entries(plot, entries, layout, (x.round() as i32, y.round() as i32))
        }
        None => Ok(()),
    };
    let (Some(axis2), Some(y2_range)) = (&chart.y2, y2_range) else {
        let mut ctx = ctx;
        configure_primary_axes(&mut ctx, chart)?;
        for series in &primary {
            draw_series(&mut ctx, series, &frame)?;
        }
        return draw_legend(&ctx.plotting_area().strip_coord_spec());
    };

    // The secondary coordinate must exist before the primary mesh is drawn: it takes
    // over the right-hand label area, which the primary axis would otherwise use too.
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
    draw_legend(&dual.plotting_area().strip_coord_spec())
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

    /// An error bar as `(x, low, high)` in transformed units.
    fn error_bar(&self, p: &ErrorPoint) -> Option<(f64, f64, f64)> {
        let (x, _) = self.point(p.x, p.y)?;
        let lo = self.lower_y(p.lo.min(p.hi))?;
        let hi = self.y.forward(p.hi.max(p.lo))?;
        Some((x, lo, hi))
    }

    /// A band's outline: along its upper edge, back along its lower one.
    fn band(&self, points: &[(f64, f64, f64)]) -> Vec<(f64, f64)> {
        let upper = points.iter().filter_map(|&(x, _, hi)| self.point(x, hi));
        let lower: Vec<_> = points
            .iter()
            .filter_map(|&(x, lo, _)| Some((self.x.forward(x)?, self.lower_y(lo)?)))
            .collect();
        upper.chain(lower.into_iter().rev()).collect()
    }

    /// Vertical lines across the visible y range.
    fn vertical_lines(&self, xs: &[f64]) -> Vec<Vec<(f64, f64)>> {
        xs.iter()
            .filter_map(|&x| self.x.forward(x))
            .map(|x| vec![(x, self.y_range.start), (x, self.y_range.end)])
            .collect()
    }
}

/// Generates `draw_series`/`draw_secondary_series`: plotters gives the two y axes
/// different chart types, so one body is stamped out for each.
macro_rules! series_drawer {
    ($name:ident, $ctx:ty, $method:ident) => {
        fn $name<DB: DrawingBackend>(ctx: &mut $ctx, series: &Series, frame: &Frame) -> Result<()> {
            let c = color(series.color);
            let stroke = ShapeStyle::from(&c).stroke_width(2);
            match &series.data {
                SeriesData::Line(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, y)| frame.point(x, y))
                        .collect();
                    if series.dashed {
                        ctx.$method(DashedLineSeries::new(pts, 8, 5, stroke))
                    } else {
                        ctx.$method(LineSeries::new(pts, stroke))
                    }
                    .map_err(plot_error)?;
                }
                SeriesData::Markers(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|&(x, y)| frame.point(x, y))
                        .collect();
                    ctx.$method(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                        .map_err(plot_error)?;
                }
                SeriesData::ErrorBars(points) => {
                    let pts: Vec<_> = points
                        .iter()
                        .filter_map(|p| frame.point(p.x, p.y))
                        .collect();
                    ctx.$method(LineSeries::new(pts.clone(), stroke))
                        .map_err(plot_error)?;
                    ctx.$method(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                        .map_err(plot_error)?;
                    let bars: Vec<_> = points
                        .iter()
                        .filter_map(|p| {
                            let (x, lo, hi) = frame.error_bar(p)?;
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
                    let polygon = frame.band(points);
                    ctx.$method(std::iter::once(Polygon::new(polygon, c.mix(0.18).filled())))
                        .map_err(plot_error)?;
                }
                SeriesData::VerticalLines(xs) => {
                    for line in frame.vertical_lines(xs) {
                        if series.dashed {
                            ctx.$method(DashedLineSeries::new(line, 6, 4, stroke))
                        } else {
                            ctx.$method(LineSeries::new(line, stroke))
                        }
                        .map_err(plot_error)?;
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

/// What a legend entry's sample looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LegendSample {
    Line {
        dashed: bool,
        width: u32,
    },
    /// A filled dot (markers, error bars).
    Dot,
    /// A translucent box (bands).
    Patch,
    /// A white-filled ring (a marked point on a map).
    Marker,
    /// A white line on a dark one (an outlined region on a map).
    Outline,
}

/// One legend entry.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LegendEntry {
    pub label: String,
    pub sample: LegendSample,
    pub color: RGBColor,
}

/// The entries of a chart's labelled series, in order.
fn legend_entries(chart: &Chart) -> Vec<LegendEntry> {
    chart
        .series
        .iter()
        .filter_map(|s| {
            let sample = match s.data {
                SeriesData::Line(_) | SeriesData::VerticalLines(_) => LegendSample::Line {
                    dashed: s.dashed,
                    width: 3,
                },
                SeriesData::Markers(_) | SeriesData::ErrorBars(_) => LegendSample::Dot,
                SeriesData::Band(_) => LegendSample::Patch,
            };
            Some(LegendEntry {
                label: s.label.clone()?,
                sample,
                color: color(s.color),
            })
        })
        .collect()
}

/// A legend box's geometry in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LegendLayout {
    pub columns: usize,
    pub column_width: u32,
    pub row_height: u32,
    pub width: u32,
    pub height: u32,
}

const LEGEND_FONT: u32 = 14;
const LEGEND_PAD: u32 = 6;
const LEGEND_SAMPLE: u32 = 26;
/// Space between columns of a legend laid out in several.
const LEGEND_COLUMN_GAP: u32 = 18;

/// Lays the entries out in as many columns as fit in `max_width` pixels (one
/// column when it is 0), with the text measured in the figures' font.
pub(super) fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    max_width: u32,
) -> Result<LegendLayout> {
    let style = TextStyle::from(("sans-serif", LEGEND_FONT).into_font());
    let mut text_width = 0;
    let mut text_height = LEGEND_FONT;
    for e in entries {
        let (w, h) = area
            .estimate_text_size(&e.label, &style)
            .map_err(plot_error)?;
        text_width = text_width.max(w);
        text_height = text_height.max(h);
    }
    let column_width = LEGEND_SAMPLE + LEGEND_PAD + text_width;
    let row_height = text_height + 6;
    let fit = (max_width.saturating_sub(2 * LEGEND_PAD) + LEGEND_COLUMN_GAP)
        / (column_width + LEGEND_COLUMN_GAP);
    let columns = (fit as usize).clamp(1, entries.len().max(1));
    let rows = entries.len().div_ceil(columns) as u32;
    Ok(LegendLayout {
        columns,
        column_width,
        row_height,
        width: 2 * LEGEND_PAD
            + columns as u32 * column_width
            + (columns as u32 - 1) * LEGEND_COLUMN_GAP,
        height: 2 * LEGEND_PAD + rows * row_height,
    })
}

/// Draws a legend box with its top-left corner at `origin` (pixels in `area`),
/// entries filling the columns row by row.
pub(super) fn draw_legend_entries<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    layout: &LegendLayout,
    (x0, y0): (i32, i32),
) -> Result<()> {
    let (w, h) = (layout.width as i32, layout.height as i32);
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        WHITE.mix(0.9).filled(),
    ))
    .map_err(plot_error)?;
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        ShapeStyle::from(&RGBColor(180, 180, 180)).stroke_width(1),
    ))
    .map_err(plot_error)?;
    let font = TextStyle::from(("sans-serif", LEGEND_FONT).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    let pad = LEGEND_PAD as i32;
    for (k, e) in entries.iter().enumerate() {
        let (row, column) = ((k / layout.columns) as i32, (k % layout.columns) as i32);
        let x = x0 + pad + column * (layout.column_width + LEGEND_COLUMN_GAP) as i32;
        let top = y0 + pad + row * layout.row_height as i32;
        let mid = top + layout.row_height as i32 / 2;
        let end = x + LEGEND_SAMPLE as i32 - 4;
        let centre = ((x + end) / 2, mid);
        let c = e.color;
        let line = |style: ShapeStyle| PathElement::new(vec![(x, mid), (end, mid)], style);
        match e.sample {
            LegendSample::Line {
                dashed: true,
                width,
            } => area.draw(&DashedPathElement::new(
                vec![(x, mid), (end, mid)],
                6,
                4,
                ShapeStyle::from(&c).stroke_width(width),
            )),
            LegendSample::Line {
                dashed: false,
                width,
            } => area.draw(&line(ShapeStyle::from(&c).stroke_width(width))),
            LegendSample::Dot => area.draw(&Circle::new(centre, 4, c.filled())),
            LegendSample::Patch => area.draw(&Rectangle::new(
                [(x, mid - 5), (end, mid + 5)],
                c.mix(0.3).filled(),
            )),
            LegendSample::Marker => {
                area.draw(&Circle::new(centre, 6, WHITE.filled()))
                    .and_then(|_| {
                        area.draw(&Circle::new(
                            centre,
                            6,
                            ShapeStyle::from(&BLACK).stroke_width(2),
                        ))
                    })
            }
            LegendSample::Outline => area
                .draw(&line(ShapeStyle::from(&BLACK).stroke_width(5)))
                .and_then(|_| area.draw(&line(ShapeStyle::from(&WHITE).stroke_width(2)))),
        }
        .map_err(plot_error)?;
        area.draw(&Text::new(
            e.label.clone(),
            (x + LEGEND_SAMPLE as i32 + pad, mid),
            font.clone(),
        ))
        .map_err(plot_error)?;
    }
    Ok(())
}

/// Something drawn in the plot area, in pixels from its top-left corner.
#[derive(Clone, Debug, PartialEq)]
enum Obstacle {
    Segment((f64, f64), (f64, f64)),
    /// A filled polygon (a band).
    Area(Vec<(f64, f64)>),
}

/// Maps transformed data units to pixels of a plot area of `size`.
struct PixelMap {
    x: Range<f64>,
    y: Range<f64>,
    size: (f64, f64),
}

impl PixelMap {
    fn pixel(&self, (u, v): (f64, f64)) -> (f64, f64) {
        (
            (u - self.x.start) / (self.x.end - self.x.start) * self.size.0,
            (1.0 - (v - self.y.start) / (self.y.end - self.y.start)) * self.size.1,
        )
    }
}

/// What a series draws, as obstacles for the legend (markers as short segments
/// the width of their dot).
fn series_obstacles(data: &SeriesData, frame: &Frame, pixels: &PixelMap) -> Vec<Obstacle> {
    let polyline = |pts: Vec<(f64, f64)>| -> Vec<Obstacle> {
        let pts: Vec<(f64, f64)> = pts.into_iter().map(|p| pixels.pixel(p)).collect();
        if pts.len() == 1 {
            return vec![Obstacle::Segment(pts[0], pts[0])];
        }
        pts.windows(2)
            .map(|w| Obstacle::Segment(w[0], w[1]))
            .collect()
    };
    let dots = |pts: Vec<(f64, f64)>| -> Vec<Obstacle> {
        pts.into_iter()
            .map(|p| {
                let (x, y) = pixels.pixel(p);
                Obstacle::Segment((x - 3.0, y), (x + 3.0, y))
            })
            .collect()
    };
    match data {
        SeriesData::Line(points) => polyline(
            points
                .iter()
                .filter_map(|&(x, y)| frame.point(x, y))
                .collect(),
        ),
        SeriesData::Markers(points) => dots(
            points
                .iter()
                .filter_map(|&(x, y)| frame.point(x, y))
                .collect(),
        ),
        SeriesData::ErrorBars(points) => {
            let centres: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| frame.point(p.x, p.y))
                .collect();
            let mut out = polyline(centres.clone());
            out.extend(dots(centres));
            out.extend(points.iter().filter_map(|p| {
                let (x, lo, hi) = frame.error_bar(p)?;
                Some(Obstacle::Segment(
                    pixels.pixel((x, lo)),
                    pixels.pixel((x, hi)),
                ))
            }));
            out
        }
        SeriesData::Band(points) => vec![Obstacle::Area(
            frame
                .band(points)
                .into_iter()
                .map(|p| pixels.pixel(p))
                .collect(),
        )],
        SeriesData::VerticalLines(xs) => frame
            .vertical_lines(xs)
            .into_iter()
            .flat_map(polyline)
            .collect(),
    }
}

/// The corner whose legend box (of `size_box` pixels) keeps clear of every
/// obstacle, trying `preferred` first; `None` when every corner is covered.
fn legend_corner(
    plot: (f64, f64),
    size_box: (f64, f64),
    obstacles: &[Obstacle],
    preferred: LegendPosition,
) -> Option<LegendPosition> {
    if size_box.0 + 2.0 * LEGEND_INSET > plot.0 || size_box.1 + 2.0 * LEGEND_INSET > plot.1 {
        return None;
    }
    std::iter::once(preferred)
        .chain(LegendPosition::ALL.into_iter().filter(|&p| p != preferred))
        .find(|corner| {
            let (x, y) = corner.origin(plot, size_box);
            let c = LEGEND_CLEARANCE;
            let rect = (x - c, y - c, x + size_box.0 + c, y + size_box.1 + c);
            !obstacles.iter().any(|o| obstacle_hits(o, rect))
        })
}

/// Whether an obstacle touches the rectangle `(x0, y0, x1, y1)`.
fn obstacle_hits(obstacle: &Obstacle, rect: (f64, f64, f64, f64)) -> bool {
    match obstacle {
        Obstacle::Segment(a, b) => segment_hits(*a, *b, rect),
        Obstacle::Area(polygon) => {
            let n = polygon.len();
            (0..n).any(|k| segment_hits(polygon[k], polygon[(k + 1) % n], rect))
                || contains(polygon, (rect.0, rect.1))
        }
    }
}

/// Liang–Barsky: whether the segment from `a` to `b` meets the rectangle
/// `(x0, y0, x1, y1)`.
fn segment_hits(a: (f64, f64), b: (f64, f64), (x0, y0, x1, y1): (f64, f64, f64, f64)) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    t0 <= t1
}

/// Even-odd point-in-polygon test.
fn contains(polygon: &[(f64, f64)], (x, y): (f64, f64)) -> bool {
    let n = polygon.len();
    let mut inside = false;
    for k in 0..n {
        let (a, b) = (polygon[k], polygon[(k + 1) % n]);
        if (a.1 > y) != (b.1 > y) && x < a.0 + (y - a.1) / (b.1 - a.1) * (b.0 - a.0) {
            inside = !inside;
        }
    }
    inside
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
pub(super) fn axis_coord(axis: &Axis, range: Range<f64>) -> Coord {
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
pub(super) fn tick_label(v: f64) -> String {
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

pub(super) fn register_font() -> Result<()> {
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

pub(super) fn plot_error(e: impl std::fmt::Display) -> Error {
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
    fn segments_meet_rectangles_when_they_cross_touch_or_lie_inside() {
        let rect = (10.0, 10.0, 20.0, 20.0);
        // Through it, inside it, touching its edge, beside it, and a point.
        assert!(segment_hits((0.0, 15.0), (30.0, 15.0), rect));
        assert!(segment_hits((12.0, 12.0), (18.0, 18.0), rect));
        assert!(segment_hits((20.0, 0.0), (20.0, 30.0), rect));
        assert!(!segment_hits((0.0, 0.0), (30.0, 5.0), rect));
        assert!(!segment_hits((0.0, 30.0), (9.0, 0.0), rect));
        assert!(segment_hits((15.0, 15.0), (15.0, 15.0), rect));
        // Even-odd containment, for a box lying wholly inside a band.
        let square = [(0.0, 0.0), (40.0, 0.0), (40.0, 40.0), (0.0, 40.0)];
        assert!(contains(&square, (10.0, 10.0)));
        assert!(!contains(&square, (50.0, 10.0)));
    }

    #[test]
    fn legends_take_the_first_empty_corner_or_go_outside() {
        let plot = (400.0, 300.0);
        let size = (100.0, 50.0);
        let line = |a: (f64, f64), b: (f64, f64)| Obstacle::Segment(a, b);
        // Nothing drawn: the preferred corner.
        assert_eq!(
            legend_corner(plot, size, &[], LegendPosition::LowerLeft),
            Some(LegendPosition::LowerLeft)
        );
        // A line along the top blocks both upper corners (boxes span y 8..58).
        let top = [line((0.0, 30.0), (400.0, 30.0))];
        assert_eq!(
            legend_corner(plot, size, &top, LegendPosition::UpperRight),
            Some(LegendPosition::LowerRight)
        );
        // A diagonal from the lower left to the upper right leaves the other two.
        let diagonal = [line((0.0, 300.0), (400.0, 0.0))];
        assert_eq!(
            legend_corner(plot, size, &diagonal, LegendPosition::UpperRight),
            Some(LegendPosition::UpperLeft)
        );
        // The clearance counts: a line 2 px below the upper-right box blocks it.
        let close = [line((250.0, 60.0), (400.0, 60.0))];
        assert_eq!(
            legend_corner(plot, size, &close, LegendPosition::UpperRight),
            Some(LegendPosition::UpperLeft)
        );
        // A band under every corner, with no edge crossing the boxes: outside.
        let band = [Obstacle::Area(vec![
            (-10.0, -10.0),
            (410.0, -10.0),
            (410.0, 310.0),
            (-10.0, 310.0),
        ])];
        assert_eq!(
            legend_corner(plot, size, &band, LegendPosition::UpperRight),
            None
        );
        // Lines across the top and the bottom: outside too.
        let both = [
            line((0.0, 30.0), (400.0, 30.0)),
            line((0.0, 270.0), (400.0, 270.0)),
        ];
        assert_eq!(
            legend_corner(plot, size, &both, LegendPosition::UpperRight),
            None
        );
        // A box wider than the plot never fits inside.
        assert_eq!(
            legend_corner(plot, (390.0, 50.0), &[], LegendPosition::UpperRight),
            None
        );
    }

    #[test]
    fn series_become_obstacles_in_plot_pixels() {
        // y from 0 to 10 over 100 px: a point at (5, 10) sits at the top centre.
        let frame = Frame {
            x: Scale::Linear,
            y: Scale::Linear,
            y_range: 0.0..10.0,
        };
        let pixels = PixelMap {
            x: 0.0..10.0,
            y: 0.0..10.0,
            size: (100.0, 100.0),
        };
        let line = series_obstacles(
            &SeriesData::Line(vec![(0.0, 0.0), (5.0, 10.0)]),
            &frame,
            &pixels,
        );
        assert_eq!(line, vec![Obstacle::Segment((0.0, 100.0), (50.0, 0.0))]);
        let vertical = series_obstacles(&SeriesData::VerticalLines(vec![2.0]), &frame, &pixels);
        assert_eq!(
            vertical,
            vec![Obstacle::Segment((20.0, 100.0), (20.0, 0.0))]
        );
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
