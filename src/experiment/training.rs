//! The `training_sweep` kind: a grid of fine-tuning runs (checkpoints x ratios,
//! structured masks and full fine-tuning x learning rates x seeds) with the masked
//! Hessian before and after each, through [`crate::train::sweep`]; it draws the
//! paper's Figs. 3, 4a, 4b and 5 and reads their numbers for REPORT.md.
//!
//! A spec takes the tables `[sweep]` (the grid and the data), `[train]` (every
//! run's settings, as `maskscape train`'s flags) and `[hessian]` (the fixed batch
//! and the budgets), every field of [`TrainSweepSpec`]:
//!
//! ```toml
//! kind = "training_sweep"
//! title = "..."
//! [sweep]
//! checkpoints = [{ name = "bundled", path = "bundled/opt-bundled" }]
//! data = "bundled/sst2-mini/train.jsonl"
//! task = "sst2"
//! train_examples = 48
//! dev_examples = 32
//! test = "bundled/sst2-mini/dev.jsonl"
//! ratios = [0.1, 0.01, 0.001]
//! lrs = [1e-3, 1e-2, 1e-1]
//! [train]
//! epochs = 2
//! ```

use std::path::{Path, PathBuf};

use super::{Context, Runner, Section, Spec};
use crate::error::{Error, Result};
use crate::probe::inputs::ModelIdentity;
use crate::progress::Silent;
use crate::report::manifest::InputRecord;
use crate::report::{Manifest, atomic};
use crate::theory::sweep::{Part, Ratios, SweepSpec as LabSpec, run_sweep as run_lab};
use crate::train::sweep::summary::{figures::write_figures, reading, write_tables};
use crate::train::sweep::{TrainSweepResult, TrainSweepSpec, run_train_sweep};

/// The runner for `kind = "training_sweep"`.
pub const RUNNER: Runner = Runner {
    kind: "training_sweep",
    check: |spec| train_sweep_spec(spec).map(|_| ()),
    run: run_spec,
};

/// The tables of a `kind = "training_sweep"` spec, validated; errors name the file
/// and the key.
pub fn train_sweep_spec(spec: &Spec) -> Result<TrainSweepSpec> {
    let sweep: TrainSweepSpec = spec.parse_params()?;
    sweep
        .validate()
        .map_err(|e| Error::file(&spec.path, e.to_string()))?;
    Ok(sweep)
}

/// The keep probabilities of the lab's distance curve: from 1 down to where p d is
/// still five times n (d = 5000, n = 50), short of the interpolation peak.
const LAB_RATIOS: [f64; 5] = [1.0, 0.5, 0.2, 0.1, 0.05];
/// Masks (and noise draws) per p; the curve's shape, not its decimals, is drawn.
const LAB_TRIALS: usize = 5;

/// A curve of `(p, distance)` points.
pub type DistanceCurve = Vec<(f64, f64)>;

/// The theory lab's minimum-norm distance `(p, mean ‖ŵ‖)` on its reference
/// problem (X ~ U[0,1]^{50 x 5000}, σ = 0.5, seed 0): the shape the linear model
/// predicts for Fig. 4b.
pub fn lab_distance_curve() -> Result<DistanceCurve> {
    let lab = LabSpec {
        part: Part::Distance,
        ratios: Ratios::List(LAB_RATIOS.to_vec()),
        trials: LAB_TRIALS,
        seed: 0,
        ..LabSpec::default()
    };
    let result = run_lab(&lab, &Silent)?;
    let config = result
        .configs
        .first()
        .ok_or_else(|| Error::Numerical("the lab's distance sweep gave no result".into()))?;
    Ok(config
        .cells
        .iter()
        .map(|c| {
            let norm = c.summary(|t| t.distance.as_ref().map_or(f64::NAN, |d| d.norm));
            (c.keep_fraction, norm.mean)
        })
        .collect())
}

/// Where a sweep's outputs go.
pub struct OutputPaths<'a> {
    /// Tables, `report.md`'s neighbours and the manifest.
    pub tables: &'a Path,
    /// Figures are `<stem>-<name>.{png,svg}`.
    pub figure_stem: &'a Path,
}

impl OutputPaths<'_> {
    /// The PNG of figure `name`.
    pub fn figure(&self, name: &str) -> PathBuf {
        let mut s = self.figure_stem.as_os_str().to_owned();
        s.push(format!("-{name}.png"));
        PathBuf::from(s)
    }
}

/// Writes the tables, figures and manifest of `result`; returns the files and the
/// lab's distance curve the figures drew (for [`reading::markdown`]).
pub fn write_outputs(
    spec: &Spec,
    result: &TrainSweepResult,
    paths: &OutputPaths<'_>,
) -> Result<(Vec<PathBuf>, DistanceCurve)> {
    let lab = lab_distance_curve()?;
    let mut written = write_tables(result, paths.tables)?;
    written.extend(write_figures(result, paths.figure_stem, &lab)?);
    let mut manifest = Manifest::new(
        &format!("training sweep {}", spec.name),
        Some(result.spec.hessian.seed),
        &serde_json::json!({ "kind": spec.kind, "parameters": result.spec }),
    )?;
    manifest.add_input("spec", &spec.path)?;
    let g = &result.spec.sweep;
    for checkpoint in &g.checkpoints {
        for (file, sha256, bytes) in ModelIdentity::of(&checkpoint.path, None)?.files {
            manifest.inputs.push(InputRecord {
                role: format!("model {}", checkpoint.name),
                path: file.display().to_string(),
                sha256,
                bytes,
            });
        }
    }
    manifest.add_input("data", &g.data)?;
    for (role, file) in [("dev", &g.dev), ("test", &g.test)] {
        if let Some(file) = file {
            manifest.add_input(role, file)?;
        }
    }
    manifest.add_outputs(&written);
    manifest.write(paths.tables)?;
    written.push(paths.tables.join("manifest.json"));
    Ok((written, lab))
}

/// The reading of `result` with an image line per figure drawn, linked by `link`
/// (from the figure's PNG path).
pub fn reading_markdown(
    result: &TrainSweepResult,
    lab: &[(f64, f64)],
    paths: &OutputPaths<'_>,
    written: &[PathBuf],
    link: &dyn Fn(&Path) -> String,
) -> String {
    reading::markdown(result, lab, &|name| {
        let png = paths.figure(name);
        if written.contains(&png) {
            format!("![{name}]({})\n", link(&png))
        } else {
            String::new()
        }
    })
}

fn run_spec(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let sweep = train_sweep_spec(spec)?;
    // `reproduce` recomputes every unit: the cache lives only for this run.
    let cache = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let result = run_train_sweep(&sweep, cache.path(), context.progress)?;
    let tables = context.tables_dir(spec);
    let stem = context.figures_dir.join(&spec.name);
    let paths = OutputPaths {
        tables: &tables,
        figure_stem: &stem,
    };
    let (mut outputs, lab) = write_outputs(spec, &result, &paths)?;
    let tail = format!(
        "\n{} runs and {} Hessian units; per-run table (`runs`), per-arm table (`arms`) and \
         `manifest.json`: `{}/`.\n",
        result.runs.len(),
        result.starts.len() + result.scopes.len(),
        context.report_link(&tables)
    );
    // REPORT.md sits in analysis/, the spec's report.md one folder down.
    let md = reading_markdown(&result, &lab, &paths, &outputs, &|png| {
        context.report_link(png)
    }) + &tail;
    let local = reading_markdown(&result, &lab, &paths, &outputs, &|png| {
        format!("../{}", context.report_link(png))
    });
    let report = tables.join("report.md");
    atomic::write_bytes(&report, format!("# {}\n\n{local}", spec.title).as_bytes())?;
    outputs.push(report);
    Ok(Section {
        markdown: md,
        outputs,
    })
}
