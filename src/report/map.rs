//! Maps: a scalar field over a plane (a 2-D loss landscape) drawn as filled
//! contours with contour lines, a colour bar, another field's contours overlaid,
//! an outlined region, marked points and labelled paths.
//!
//! The field is interpolated linearly on the two triangles of each grid cell (cut
//! along the diagonal from its lower-left to its upper-right corner), and every
//! drawn element comes from that one interpolant: the filled bands are the
//! triangles clipped to each band of values, the contour lines are its level
//! sets, so fills and lines always agree. Levels sit at round values.
//!
//! Paths ([`MapPath`]) are how trajectories go on a map: a polyline of points in
//! the map's coordinates with a label, drawn over everything else with its start
//! and end marked. A training run projected onto the landscape's plane (see
//! [`crate::probe::landscape::project_onto_plane`]) is drawn by passing it as one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::atomic;
use super::plot::{
    Axis, LegendEntry, LegendSample, axis_coord, color, draw_legend_entries, legend_layout,
    plot_error, register_font, tick_label,
};
use crate::error::{Error, Result};

/// A scalar field on a rectangular grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// Ascending coordinates along x and along y.
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `values[j * xs.len() + i]` at `(xs[i], ys[j])`.
    pub values: Vec<f64>,
}

impl Grid {
    /// Checks the shapes (at least 2 × 2 points, strictly ascending coordinates, one
    /// value per point).
    pub fn new(xs: Vec<f64>, ys: Vec<f64>, values: Vec<f64>) -> Result<Self> {
        let grid = Grid { xs, ys, values };
        grid.check()?;
        Ok(grid)
    }

    /// The shape checks of [`Self::new`] (the fields are public, so drawing checks
    /// again).
    fn check(&self) -> Result<()> {
        let ascending = |v: &[f64]| v.len() >= 2 && v.windows(2).all(|w| w[0] < w[1]);
        if !(ascending(&self.xs) && ascending(&self.ys)) {
            return Err(Error::Numerical(
                "a map needs at least 2 x 2 points with ascending coordinates".into(),
            ));
        }
        if self.values.len() != self.xs.len() * self.ys.len() {
            return Err(Error::Numerical(format!(
                "a {} x {} map needs {} values, found {}",
                self.xs.len(),
                self.ys.len(),
                self.xs.len() * self.ys.len(),
                self.values.len()
            )));
        }
        Ok(())
    }

    fn value(&self, i: usize, j: usize) -> f64 {
        self.values[j * self.xs.len() + i]
    }

    /// The smallest and largest finite value.
    pub fn range(&self) -> (f64, f64) {
        self.values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// The two triangles of every cell as vertex ids (`j * nx + i`), lower-left
    /// to upper-right diagonal first.
    fn triangles(&self) -> Vec<[usize; 3]> {
        let nx = self.xs.len();
        let mut out = Vec::with_capacity(2 * (nx - 1) * (self.ys.len() - 1));
        for j in 0..self.ys.len() - 1 {
            for i in 0..nx - 1 {
                let (a, b, c, d) = (
                    j * nx + i,
                    j * nx + i + 1,
                    (j + 1) * nx + i + 1,
                    (j + 1) * nx + i,
                );
                out.push([a, b, c]);
                out.push([a, c, d]);
            }
        }
        out
    }

    fn vertex(&self, id: usize) -> (f64, f64, f64) {
        let nx = self.xs.len();
        (self.xs[id % nx], self.ys[id / nx], self.values[id])
    }
}

/// Contour levels at round values (multiples of 1, 2 or 5 times a power of ten)
/// whose first and last enclose `[lo, hi]`, with the step whose number of bands
/// is nearest `target`.
pub fn round_levels(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return vec![0.0, 1.0];
    }
    let span = if hi > lo {
        hi - lo
    } else {
        lo.abs().max(1.0) * 1e-3
    };
    let magnitude = 10f64.powf((span / target.max(1) as f64).log10().floor());
    let bounds = |step: f64| {
        let first = (lo / step).floor() as i64;
        let last = ((hi / step).ceil() as i64).max(first + 1);
        (first, last)
    };
    let step = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        .iter()
        .map(|m| m * magnitude)
        .min_by_key(|&step| {
            let (first, last) = bounds(step);
            (last - first - target as i64).abs()
        })
        .unwrap_or(magnitude);
    let (first, last) = bounds(step);
    // k * step, not repeated additions, so that the levels print round.
    (first..=last).map(|k| k as f64 * step).collect()
}

/// The level set `{value = level}` of the grid's interpolant as polylines (open
/// ones end on the border; closed ones repeat their first point).
pub fn contour_lines(grid: &Grid, level: f64) -> Vec<Vec<(f64, f64)>> {
    // Each crossing lies on a grid edge, named by its two vertex ids (smaller
    // first), so the two triangles sharing an edge produce the same point and the
    // segments chain by edge name.
    let mut segments: Vec<[(usize, usize); 2]> = Vec::new();
    for tri in grid.triangles() {
        let above = |id: usize| grid.values[id] >= level;
        let crossings: Vec<(usize, usize)> = [(tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])]
            .into_iter()
            .filter(|&(p, q)| {
                grid.values[p].is_finite() && grid.values[q].is_finite() && above(p) != above(q)
            })
            .map(|(p, q)| (p.min(q), p.max(q)))
            .collect();
        if let [a, b] = crossings[..] {
            segments.push([a, b]);
        }
    }
    let point = |(p, q): (usize, usize)| {
        let (xp, yp, vp) = grid.vertex(p);
        let (xq, yq, vq) = grid.vertex(q);
        let t = (level - vp) / (vq - vp);
        (xp + t * (xq - xp), yp + t * (yq - yp))
    };
    let mut at: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (s, seg) in segments.iter().enumerate() {
        for &edge in seg {
            at.entry(edge).or_default().push(s);
        }
    }
    let mut used = vec![false; segments.len()];
    let mut lines = Vec::new();
    // Open chains start at an edge with one segment (the border); what remains
    // are closed loops.
    let starts: Vec<(usize, usize)> = at
        .iter()
        .filter(|(_, s)| s.len() == 1)
        .map(|(&e, _)| e)
        .chain(segments.iter().map(|seg| seg[0]))
        .collect();
    for start in starts {
        let mut edge = start;
        let mut line = vec![point(edge)];
        while let Some(&s) = at[&edge].iter().find(|&&s| !used[s]) {
            used[s] = true;
            edge = if segments[s][0] == edge {
                segments[s][1]
            } else {
                segments[s][0]
            };
            line.push(point(edge));
        }
        if line.len() >= 2 {
            lines.push(line);
        }
    }
    lines
}

/// The pieces of the plane where the interpolant lies in `[lo, hi)` (either end
/// may be infinite), as polygons: whole rows of cells inside the band as one
/// rectangle, the triangles it cuts clipped to it.
pub fn band_polygons(grid: &Grid, lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let inside = |v: f64| v >= lo && v < hi;
    let nx = grid.xs.len();
    let mut out = Vec::new();
    for j in 0..grid.ys.len() - 1 {
        let mut run: Option<usize> = None;
        for i in 0..nx {
            let whole = i + 1 < nx
                && [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]
                    .iter()
                    .all(|&(a, b)| inside(grid.value(a, b)));
            match (whole, run) {
                (true, None) => run = Some(i),
                (false, Some(start)) => {
                    let (x0, x1) = (grid.xs[start], grid.xs[i]);
                    let (y0, y1) = (grid.ys[j], grid.ys[j + 1]);
                    out.push(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]);
                    run = None;
                }
                _ => {}
            }
            if !whole && i + 1 < nx {
                for tri in [
                    [j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1],
                    [j * nx + i, (j + 1) * nx + i + 1, (j + 1) * nx + i],
                ] {
                    let piece = clip_triangle(grid, tri, lo, hi);
                    if piece.len() >= 3 {
                        out.push(piece);
                    }
                }
            }
        }
    }
    out
}

/// The part of a triangle where the linear interpolant lies in `[lo, hi]`
/// (Sutherland–Hodgman against the two half-planes of values).
fn clip_triangle(grid: &Grid, tri: [usize; 3], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let mut poly: Vec<(f64, f64, f64)> = tri.iter().map(|&id| grid.vertex(id)).collect();
    if poly.iter().any(|p| !p.2.is_finite()) {
        return Vec::new();
    }
    for (bound, keep_above) in [(lo, true), (hi, false)] {
        if !bound.is_finite() || poly.is_empty() {
            continue;
        }
        let keeps = |v: f64| if keep_above { v >= bound } else { v <= bound };
        let mut next = Vec::with_capacity(poly.len() + 2);
        for k in 0..poly.len() {
            let p = poly[k];
            let q = poly[(k + 1) % poly.len()];
            if keeps(p.2) {
                next.push(p);
            }
            if keeps(p.2) != keeps(q.2) {
                let t = (bound - p.2) / (q.2 - p.2);
                next.push((p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1), bound));
            }
        }
        poly = next;
    }
    poly.into_iter().map(|(x, y, _)| (x, y)).collect()
}

/// A labelled polyline in the map's coordinates: a trajectory projected onto the
/// plane, drawn with its start (circle) and end (square) marked.
#[derive(Clone, Debug, PartialEq)]
pub struct MapPath {
    /// The legend's entry for it.
    pub label: String,
    /// `(x, y)` in the map's coordinates (`(α, β)` on a landscape), in order.
    pub points: Vec<(f64, f64)>,
}

/// Another field whose contours are drawn over the map, dashed, at the map's
/// levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    /// On the same grid as the map's field.
    pub grid: Grid,
    /// The legend's entry for its dashed contours.
    pub label: String,
}

/// A region of the plane, `{value ≤ 0}` of its grid, drawn as an outline.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// On the same grid as the map's field; the region is where it is at most 0.
    pub grid: Grid,
    /// The legend's entry for its outline.
    pub label: String,
}

/// One map: a field as filled contours with its own contour lines, and what is
/// drawn over it.
#[derive(Clone, Debug, PartialEq)]
pub struct MapPanel {
    pub title: String,
    /// The axes' labels (ticks fall at round values; the scales are linear).
    pub x: Axis,
    pub y: Axis,
    /// What the colours show.
    pub field: Grid,
    /// The colour bar's label.
    pub field_label: String,
    /// Contour levels (ascending); the bands between them are the colours.
    /// Values outside them take the end colours, which the colour bar then shows.
    pub levels: Vec<f64>,
    pub overlay: Option<Overlay>,
    pub region: Option<Region>,
    /// Marked points with their legend labels.
    pub markers: Vec<((f64, f64), String)>,
    pub paths: Vec<MapPath>,
}

impl MapPanel {
    /// Every grid well formed, the overlay and region on the field's grid, at
    /// least two finite ascending levels.
    fn check(&self) -> Result<()> {
        self.field.check()?;
        for grid in [
            self.overlay.as_ref().map(|o| &o.grid),
            self.region.as_ref().map(|r| &r.grid),
        ]
        .into_iter()
        .flatten()
        {
            grid.check()?;
            if grid.xs != self.field.xs || grid.ys != self.field.ys {
                return Err(Error::Numerical(
                    "a map's overlay and region must share its grid".into(),
                ));
            }
        }
        let levels = &self.levels;
        if levels.len() < 2
            || levels.iter().any(|l| !l.is_finite())
            || levels.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::Numerical(
                "a map needs at least two finite, ascending levels".into(),
            ));
        }
        Ok(())
    }
}

/// Size of one map panel in pixels.
const MAP_PANEL: (u32, u32) = (760, 640);
/// The colour bar strip: its labels' width, the bar's, and room on the right for
/// the words `above` and `below`.
const COLORBAR_LABELS: u32 = 66;
const COLORBAR_BAR: u32 = 22;
const COLORBAR_RIGHT: u32 = 42;
const COLORBAR: u32 = 4 + COLORBAR_LABELS + COLORBAR_BAR + COLORBAR_RIGHT;

/// Writes the panels side by side as `stem.svg` and `stem.png`; returns their
/// paths.
pub fn save_maps(panels: &[MapPanel], stem: &Path) -> Result<Vec<PathBuf>> {
    if panels.is_empty() {
        return Err(Error::Numerical("a map figure needs a panel".into()));
    }
    for panel in panels {
        panel.check()?;
    }
    register_font()?;
    let size = (MAP_PANEL.0 * panels.len().max(1) as u32, MAP_PANEL.1);
    let svg_path = stem.with_extension("svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_maps(&root, panels)?;
        root.present().map_err(plot_error)?;
    }
    atomic::write_bytes(&svg_path, svg.as_bytes())?;
    let png_path = stem.with_extension("png");
    atomic::write_via_path(&png_path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        draw_maps(&root, panels)?;
        root.present().map_err(plot_error)
    })?;
    Ok(vec![svg_path, png_path])
}

fn draw_maps<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panels: &[MapPanel]) -> Result<()> {
    root.fill(&WHITE).map_err(plot_error)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_map(panel, area)?;
    }
    Ok(())
}

/// Viridis at `t ∈ [0, 1]` (matplotlib's, from nine anchors).
fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 82, 139),
        (44, 113, 142),
        (33, 145, 140),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = t.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let k = (t.floor() as usize).min(ANCHORS.len() - 2);
    let f = t - k as f64;
    let mix = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (ANCHORS[k], ANCHORS[k + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour of band `k` of `levels.len() + 1` (band 0 below the first level,
/// the last above the last level): viridis over the inner bands, darker and
/// lighter for the outer two.
fn band_color(k: usize, levels: usize) -> RGBColor {
    let inner = levels.saturating_sub(1).max(1);
    if k == 0 {
        RGBColor(40, 0, 50)
    } else if k >= levels {
        RGBColor(255, 250, 190)
    } else {
        viridis((k as f64 - 0.5) / inner as f64)
    }
}

/// `[lo, hi)` of band `k` (infinite for the outer two).
fn band_bounds(k: usize, levels: &[f64]) -> (f64, f64) {
    let lo = if k == 0 {
        f64::NEG_INFINITY
    } else {
        levels[k - 1]
    };
    let hi = if k >= levels.len() {
        f64::INFINITY
    } else {
        levels[k]
    };
    (lo, hi)
}

fn draw_map<DB: DrawingBackend>(panel: &MapPanel, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let body = area
        .margin(12, 12, 12, 12)
        .titled(&panel.title, ("sans-serif", 21))
        .map_err(plot_error)?;
    let legend = map_legend(panel);
    let (w, _) = body.dim_in_pixel();
    let layout = legend_layout(&body, &legend, w.saturating_sub(20))?;
    let (_, h) = body.dim_in_pixel();
    let (top, legend_area) = body.split_vertically(h.saturating_sub(layout.height + 10));
    let (tw, _) = top.dim_in_pixel();
    let (plot_area, bar_area) = top.split_horizontally(tw.saturating_sub(COLORBAR));
    let (x0, x1) = (panel.field.xs[0], panel.field.xs[panel.field.xs.len() - 1]);
    let (y0, y1) = (panel.field.ys[0], panel.field.ys[panel.field.ys.len() - 1]);
    let mut ctx = ChartBuilder::on(&plot_area)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(axis_coord(&panel.x, x0..x1), axis_coord(&panel.y, y0..y1))
        .map_err(plot_error)?;
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(plot_error)?;

    let levels = &panel.levels;
    let (field_lo, field_hi) = panel.field.range();
    for k in 0..=levels.len() {
        let (lo, hi) = band_bounds(k, levels);
        let fill = band_color(k, levels.len()).filled();
        let pieces = band_polygons(&panel.field, lo, hi);
        ctx.draw_series(pieces.into_iter().map(|p| Polygon::new(p, fill)))
            .map_err(plot_error)?;
    }
    let line = |c: RGBColor, width: u32| ShapeStyle::from(&c).stroke_width(width);
    for &level in levels {
        for l in contour_lines(&panel.field, level) {
            ctx.draw_series(std::iter::once(PathElement::new(
                l,
                line(RGBColor(20, 20, 20), 1),
            )))
            .map_err(plot_error)?;
        }
    }
    if let Some(overlay) = &panel.overlay {
        for &level in levels {
            for l in contour_lines(&overlay.grid, level) {
                ctx.draw_series(std::iter::once(DashedPathElement::new(
                    l,
                    7,
                    5,
                    line(OVERLAY, 2),
                )))
                .map_err(plot_error)?;
            }
        }
    }
    if let Some(region) = &panel.region {
        for l in contour_lines(&region.grid, 0.0) {
            // A dark line under a white one shows on every colour of the map.
            ctx.draw_series([
                PathElement::new(l.clone(), line(BLACK, 5)),
                PathElement::new(l, line(WHITE, 2)),
            ])
            .map_err(plot_error)?;
        }
    }
    for (p, path) in panel.paths.iter().enumerate() {
        let c = color(PATH_COLORS[p % PATH_COLORS.len()]);
        ctx.draw_series(std::iter::once(PathElement::new(
            path.points.clone(),
            line(c, 3),
        )))
        .map_err(plot_error)?;
        if let (Some(&first), Some(&last)) = (path.points.first(), path.points.last()) {
            ctx.draw_series(std::iter::once(
                EmptyElement::at(first) + Circle::new((0, 0), 5, c.filled()),
            ))
            .map_err(plot_error)?;
            ctx.draw_series(std::iter::once(
                EmptyElement::at(last) + Rectangle::new([(-5, -5), (5, 5)], c.filled()),
            ))
            .map_err(plot_error)?;
        }
    }
    for ((x, y), _) in &panel.markers {
        ctx.draw_series(std::iter::once(
            EmptyElement::at((*x, *y))
                + Circle::new((0, 0), 7, WHITE.filled())
                + Circle::new((0, 0), 7, line(BLACK, 2))
                + Circle::new((0, 0), 2, BLACK.filled()),
        ))
        .map_err(plot_error)?;
    }
    let frame = ctx.plotting_area().strip_coord_spec();
    let (fw, fh) = frame.dim_in_pixel();
    frame
        .draw(&Rectangle::new(
            [(0, 0), (fw as i32 - 1, fh as i32 - 1)],
            line(BLACK, 1),
        ))
        .map_err(plot_error)?;

    draw_colorbar(
        &bar_area,
        panel,
        field_lo < levels[0],
        field_hi > levels[levels.len() - 1],
    )?;
    draw_legend_entries(&legend_area, &legend, &layout, (10, 4))
}

/// The overlay's dashed contours: red shows on every viridis colour.
const OVERLAY: RGBColor = RGBColor(214, 39, 40);
/// Palette indices of paths (orange, pink, cyan, ...: apart from the map's
/// colours and the overlay's red).
const PATH_COLORS: [usize; 4] = [1, 6, 9, 5];

fn map_legend(panel: &MapPanel) -> Vec<LegendEntry> {
    let mut entries: Vec<LegendEntry> = panel
        .markers
        .iter()
        .map(|(_, label)| LegendEntry {
            label: label.clone(),
            sample: LegendSample::Marker,
            color: BLACK,
        })
        .collect();
    entries.push(LegendEntry {
        label: "contours of the map (solid)".into(),
        sample: LegendSample::Line {
            dashed: false,
            width: 1,
        },
        color: RGBColor(20, 20, 20),
    });
    if let Some(o) = &panel.overlay {
        entries.push(LegendEntry {
            label: o.label.clone(),
            sample: LegendSample::Line {
                dashed: true,
                width: 2,
            },
            color: OVERLAY,
        });
    }
    if let Some(r) = &panel.region {
        entries.push(LegendEntry {
            label: r.label.clone(),
            sample: LegendSample::Outline,
            color: WHITE,
        });
    }
    for (p, path) in panel.paths.iter().enumerate() {
        entries.push(LegendEntry {
            label: path.label.clone(),
            sample: LegendSample::Line {
                dashed: false,
                width: 3,
            },
            color: color(PATH_COLORS[p % PATH_COLORS.len()]),
        });
    }
    entries
}

/// The colour bar: one box per band between the levels, labelled at the levels,
/// with a box for values below or above them when the field has any.
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &MapPanel,
    under: bool,
    over: bool,
) -> Result<()> {
    let levels = &panel.levels;
    let n = levels.len();
    let step = (levels[n - 1] - levels[0]) / (n - 1).max(1) as f64;
    let lo = levels[0] - if under { step } else { 0.0 };
    let hi = levels[n - 1] + if over { step } else { 0.0 };
    let ticks = Axis::linear(panel.field_label.as_str());
    let mut ctx = ChartBuilder::on(area)
        .margin_left(4)
        .margin_right(COLORBAR_RIGHT)
        .x_label_area_size(48)
        .y_label_area_size(COLORBAR_LABELS)
        .build_cartesian_2d(axis_coord(&Axis::linear(""), 0.0..1.0), {
            let mut coord = axis_coord(&ticks, lo..hi);
            coord.set_ticks(levels.clone());
            coord
        })
        .map_err(plot_error)?;
    ctx.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(panel.field_label.as_str())
        .y_label_formatter(&|v| tick_label(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(plot_error)?;
    let mut boxes = Vec::new();
    for k in 0..=n {
        let (a, b) = band_bounds(k, levels);
        let (a, b) = (a.max(lo), b.min(hi));
        if b > a {
            boxes.push(Rectangle::new(
                [(0.0, a), (1.0, b)],
                band_color(k, n).filled(),
            ));
        }
    }
    ctx.draw_series(boxes).map_err(plot_error)?;
    let frame = ctx.plotting_area().strip_coord_spec();
    let (fw, fh) = frame.dim_in_pixel();
    frame
        .draw(&Rectangle::new(
            [(0, 0), (fw as i32 - 1, fh as i32 - 1)],
            ShapeStyle::from(&BLACK).stroke_width(1),
        ))
        .map_err(plot_error)?;
    let style = ("sans-serif", 12).into_font().color(&BLACK);
    if over {
        frame
            .draw(&Text::new("above", (fw as i32 + 3, 2), style.clone()))
            .map_err(plot_error)?;
    }
    if under {
        frame
            .draw(&Text::new("below", (fw as i32 + 3, fh as i32 - 14), style))
            .map_err(plot_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// `f(x, y) = x + 2y` on a 3 × 3 grid over `[0, 2]²`: linear, so its
    /// interpolant is exact and every contour is a straight line.
    fn plane() -> Grid {
        let xs = vec![0.0, 1.0, 2.0];
        let ys = vec![0.0, 1.0, 2.0];
        let values = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x| x + 2.0 * y))
            .collect();
        Grid::new(xs, ys, values).unwrap()
    }

    #[test]
    fn contours_of_a_plane_are_its_level_lines() {
        let grid = plane();
        let lines = contour_lines(&grid, 3.0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        // From (0, 1.5) to (2, 0.5) (or back), every point on x + 2y = 3.
        assert!(line.iter().all(|&(x, y)| (x + 2.0 * y - 3.0).abs() < 1e-12));
        let ends = [line[0], line[line.len() - 1]];
        assert!(
            ends.contains(&(0.0, 1.5)) && ends.contains(&(2.0, 0.5)),
            "{ends:?}"
        );
        // A level outside the range has no contour.
        assert!(contour_lines(&grid, 7.0).is_empty());
    }

    #[test]
    fn a_peak_gives_a_closed_contour() {
        // One high value in the middle of a 3 x 3 grid: the level 0.5 is a loop
        // through the midpoints of the edges from the centre.
        let mut values = vec![0.0; 9];
        values[4] = 1.0;
        let grid = Grid::new(vec![0.0, 1.0, 2.0], vec![0.0, 1.0, 2.0], values).unwrap();
        let lines = contour_lines(&grid, 0.5);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line.first(), line.last(), "closed: {line:?}");
        // 6 edges from the centre (4 axis-aligned, 2 diagonals): 6 points + the repeat.
        assert_eq!(line.len(), 7, "{line:?}");
    }

    #[test]
    fn bands_tile_the_plane() {
        // x + 2y over [0, 2]²: below 2 is the triangle (0,0), (2,0), (0,1) of area
        // 1, at or above 4 the triangle (2,1), (2,2), (0,2) of area 1, so the band
        // [2, 4) has area 2 and the three bands tile the square's 4.
        let grid = plane();
        let area = |poly: &Vec<(f64, f64)>| {
            let n = poly.len();
            0.5 * (0..n)
                .map(|k| {
                    let (a, b) = (poly[k], poly[(k + 1) % n]);
                    a.0 * b.1 - b.0 * a.1
                })
                .sum::<f64>()
                .abs()
        };
        let levels = [2.0, 4.0];
        let mut total = 0.0;
        for k in 0..=levels.len() {
            let (lo, hi) = band_bounds(k, &levels);
            total += band_polygons(&grid, lo, hi).iter().map(area).sum::<f64>();
        }
        assert!((total - 4.0).abs() < 1e-12, "{total}");
        let middle: f64 = band_polygons(&grid, 2.0, 4.0).iter().map(area).sum();
        assert!((middle - 2.0).abs() < 1e-12, "{middle}");
    }

    #[test]
    fn levels_are_round_and_enclose_the_range() {
        // Steps of 0.5 give 5 bands over [0.73, 2.9], steps of 0.2 give 12: the
        // latter is nearer 10.
        let levels = round_levels(0.73, 2.9, 10);
        let want: Vec<f64> = (3..=15).map(|k| k as f64 * 0.2).collect();
        assert_eq!(levels.len(), want.len(), "{levels:?}");
        assert!(levels.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        let labels: Vec<String> = levels.iter().map(|&l| tick_label(l)).collect();
        assert_eq!(labels[0], "0.6");
        assert_eq!(labels[12], "3");
        let small = round_levels(-3e-4, 2e-4, 5);
        let want = [-3e-4, -2e-4, -1e-4, 0.0, 1e-4, 2e-4];
        assert_eq!(small.len(), want.len(), "{small:?}");
        assert!(small.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15));
    }

    #[test]
    fn maps_render_with_an_overlay_a_region_and_a_path() -> TestResult {
        let grid = plane();
        let mut shifted = grid.clone();
        shifted.values.iter_mut().for_each(|v| *v = 1.1 * *v - 0.2);
        let region = Grid {
            values: grid.values.iter().map(|v| v - 3.0).collect(),
            ..grid.clone()
        };
        let panel = MapPanel {
            title: "test map".into(),
            x: Axis::linear("alpha"),
            y: Axis::linear("beta"),
            field: grid.clone(),
            field_label: "loss".into(),
            levels: round_levels(0.0, 6.0, 6),
            overlay: Some(Overlay {
                grid: shifted,
                label: "model (dashed)".into(),
            }),
            region: Some(Region {
                grid: region,
                label: "region".into(),
            }),
            markers: vec![((1.0, 1.0), "checkpoint".into())],
            paths: vec![MapPath {
                label: "a training path".into(),
                points: vec![(0.2, 0.2), (0.8, 1.1), (1.5, 1.7)],
            }],
        };
        let dir = tempfile::tempdir()?;
        let paths = save_maps(&[panel.clone(), panel.clone()], &dir.path().join("map"))?;
        let svg = std::fs::read_to_string(&paths[0])?;
        assert!(svg.contains("a training path") && svg.contains("checkpoint"));
        let png = std::fs::read(&paths[1])?;
        assert_eq!(&png[1..4], b"PNG");
        // Ill-formed panels are refused before anything is written.
        let flat = MapPanel {
            levels: vec![1.0],
            ..panel.clone()
        };
        assert!(save_maps(&[flat], &dir.path().join("flat")).is_err());
        let mismatched = MapPanel {
            overlay: Some(Overlay {
                grid: Grid::new(vec![0.0, 1.0], vec![0.0, 1.0], vec![0.0; 4])?,
                label: "other grid".into(),
            }),
            ..panel
        };
        assert!(save_maps(&[mismatched], &dir.path().join("mismatched")).is_err());
        assert!(!dir.path().join("flat.svg").exists());
        assert!(save_maps(&[], &dir.path().join("none")).is_err());
        Ok(())
    }
}
