//! Experiments as data: one TOML spec per figure or table in `experiments/`, and
//! `reproduce`, which runs them all and writes `figures/` and `analysis/REPORT.md`.
//!
//! A spec names its runner with `kind`; everything else in the file except `title`
//! and `description` belongs to that runner, which parses it into its own typed
//! parameters. A new kind of experiment is a new runner: a module with a
//! [`Runner`] constant added to [`RUNNERS`]. Each runner writes its own outputs and
//! returns its section of the report.
//!
//! ```toml
//! kind = "theory"
//! title = "Top eigenvalue against p"
//! description = "..."
//! figures = ["lambda1"]
//! [sweep]
//! part = "eigen"
//! ratios = { from = 1.0, to = 0.01, points = 10 }
//! ```

pub mod network;
pub mod stability;
pub mod theory;
pub mod training;

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::atomic;

/// One experiment spec file.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file stem: names the spec's outputs (`figures/NAME.png`, `analysis/NAME/`).
    pub name: String,
    pub kind: String,
    pub title: String,
    pub description: String,
    /// Every other key of the file, for the runner to parse.
    pub params: toml::Table,
}

impl Spec {
    /// Parses the spec at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut params: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::file(path, format!("invalid TOML: {}", e.message()))
        })?;
        let mut take_string = |key: &str, required: bool| -> Result<String> {
            match params.remove(key) {
                Some(toml::Value::String(s)) => Ok(s),
                Some(_) => Err(Error::file(path, format!("`{key}` must be a string"))),
                None if required => Err(Error::MissingKey {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                }),
                None => Ok(String::new()),
            }
        };
        let kind = take_string("kind", true)?;
        let title = take_string("title", true)?;
        let description = take_string("description", false)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Spec {
            path: path.to_path_buf(),
            name,
            kind,
            title,
            description: description.trim().to_string(),
            params,
        })
    }

    /// Deserialises the runner's parameters, naming the file on failure.
    pub fn parse_params<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::Value::Table(self.params.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::file(&self.path, e.message().to_string()))
    }

    /// The runner for this spec's kind.
    pub fn runner(&self) -> Result<&'static Runner> {
        RUNNERS.iter().find(|r| r.kind == self.kind).ok_or_else(|| {
            let known: Vec<&str> = RUNNERS.iter().map(|r| r.kind).collect();
            Error::file(
                &self.path,
                format!("unknown kind `{}` (known: {})", self.kind, known.join(", ")),
            )
        })
    }
}

/// Where a runner writes, and how it reports progress.
pub struct Context<'a> {
    /// The figures folder (`figures/`).
    pub figures_dir: &'a Path,
    /// The analysis folder (`analysis/`); a runner writes its tables under
    /// `analysis/<spec name>/`.
    pub analysis_dir: &'a Path,
    pub progress: &'a dyn Progress,
}

impl Context<'_> {
    /// The spec's own table folder, `analysis/<spec name>/`.
    pub fn tables_dir(&self, spec: &Spec) -> PathBuf {
        self.analysis_dir.join(&spec.name)
    }

    /// A link to `file` usable from `analysis/REPORT.md`.
    pub fn report_link(&self, file: &Path) -> String {
        relative_path(self.analysis_dir, file)
    }
}

/// What a runner returns: its section of REPORT.md (without the heading) and the
/// files it wrote.
pub struct Section {
    pub markdown: String,
    pub outputs: Vec<PathBuf>,
}

/// A kind of experiment.
pub struct Runner {
    /// The `kind` value that selects this runner.
    pub kind: &'static str,
    /// Checks a spec's parameters without running anything.
    pub check: fn(&Spec) -> Result<()>,
    /// Runs the experiment, writes its outputs, returns its report section.
    pub run: fn(&Spec, &Context<'_>) -> Result<Section>,
}

/// Every kind of experiment `reproduce` knows.
pub const RUNNERS: &[Runner] = &[
    theory::RUNNER,
    network::PROBE,
    network::LANDSCAPE,
    network::SWEEP,
    training::RUNNER,
    stability::RUNNER,
];

/// The specs in `dir` (every `*.toml`), sorted by file name, each checked by its
/// runner, so that a bad spec fails before anything runs.
pub fn load_specs(dir: &Path) -> Result<Vec<Spec>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::file(dir, "no experiment specs (*.toml) found"));
    }
    let specs = paths
        .iter()
        .map(|p| Spec::load(p))
        .collect::<Result<Vec<_>>>()?;
    for spec in &specs {
        (spec.runner()?.check)(spec)?;
    }
    Ok(specs)
}

/// What `reproduce` reads and writes.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    pub experiments: PathBuf,
    pub figures: PathBuf,
    pub analysis: PathBuf,
    /// Run only specs of these kinds (all when `None`); REPORT.md then holds only
    /// their sections.
    pub kinds: Option<Vec<String>>,
}

impl Default for ReproduceOptions {
    fn default() -> Self {
        ReproduceOptions {
            experiments: PathBuf::from("experiments"),
            figures: PathBuf::from("figures"),
            analysis: PathBuf::from("analysis"),
            kinds: None,
        }
    }
}

/// The outcome of `reproduce`.
#[derive(Clone, Debug)]
pub struct Reproduced {
    /// The specs run, by name.
    pub specs: Vec<String>,
    /// `analysis/REPORT.md`.
    pub report: PathBuf,
    /// Every file written, REPORT.md last.
    pub outputs: Vec<PathBuf>,
}

/// Runs every spec in `options.experiments` (in file-name order) and writes
/// `analysis/REPORT.md`: a contents list, then each spec's title, description and
/// section. The report holds no timestamps, so identical runs give identical files.
pub fn reproduce(options: &ReproduceOptions, progress: &dyn Progress) -> Result<Reproduced> {
    let specs: Vec<Spec> = load_specs(&options.experiments)?
        .into_iter()
        .filter(|s| options.kinds.as_ref().is_none_or(|k| k.contains(&s.kind)))
        .collect();
    let context = Context {
        figures_dir: &options.figures,
        analysis_dir: &options.analysis,
        progress,
    };
    let mut outputs = Vec::new();
    let mut sections = Vec::new();
    for spec in &specs {
        let section = (spec.runner()?.run)(spec, &context)?;
        outputs.extend(section.outputs);
        sections.push((spec, section.markdown));
    }

    let mut report = String::from(
        "# maskscape: reproduction report\n\n\
         Written by `maskscape reproduce` from the specs in `experiments/`; every number \
         below is recomputed from the seeds in those specs, so a rerun gives this file \
         and every table byte for byte.\n\n",
    );
    for (spec, _) in &sections {
        let _ = writeln!(report, "- [{}](#{})", spec.title, anchor(&spec.title));
    }
    for (spec, markdown) in &sections {
        let _ = write!(
            report,
            "\n## {}\n\n_Spec: `{}` (kind `{}`)._\n\n",
            spec.title,
            spec.path.display().to_string().replace('\\', "/"),
            spec.kind
        );
        if !spec.description.is_empty() {
            let _ = write!(report, "{}\n\n", spec.description);
        }
        report.push_str(markdown.trim_end());
        report.push('\n');
    }
    let path = options.analysis.join("REPORT.md");
    atomic::write_bytes(&path, report.as_bytes())?;
    outputs.push(path.clone());
    Ok(Reproduced {
        specs: specs.iter().map(|s| s.name.clone()).collect(),
        report: path,
        outputs,
    })
}

/// GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The path of `to` relative to the folder `from`, with forward slashes (for links in
/// Markdown). Both are taken relative to the current directory when not absolute.
fn relative_path(from: &Path, to: &Path) -> String {
    let absolute = |p: &Path| {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        // Normalise `.` and `..` lexically: the folders may not exist yet.
        let mut parts: Vec<Component> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        parts
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let (from, to) = (absolute(from), absolute(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(to[common..].iter().cloned());
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn links_and_anchors() {
        assert_eq!(
            relative_path(Path::new("analysis"), Path::new("figures/a.png")),
            "../figures/a.png"
        );
        assert_eq!(
            relative_path(Path::new("out/analysis"), Path::new("out/analysis/x/t.csv")),
            "x/t.csv"
        );
        assert_eq!(
            anchor("Top eigenvalue: λ₁ against p"),
            "top-eigenvalue-λ₁-against-p"
        );
    }

    #[test]
    fn bad_specs_name_their_file_and_key() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "title = \"x\"\n")?;
        let err = load_specs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("`kind`"), "{err}");

        std::fs::write(&path, "kind = \"nope\"\ntitle = \"x\"\n")?;
        let err = load_specs(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("unknown kind `nope`") && err.contains("theory"),
            "{err}"
        );

        std::fs::write(
            &path,
            "kind = \"theory\"\ntitle = \"x\"\n[sweep]\ntrails = 3\n",
        )?;
        let err = load_specs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("trails"), "{err}");

        std::fs::write(
            &path,
            "kind = \"theory\"\ntitle = \"x\"\n[sweep]\nratios = [2.0]\n",
        )?;
        let err = load_specs(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("--ratios"),
            "{err}"
        );

        std::fs::write(&path, "kind = [1\n")?;
        let err = load_specs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid TOML"), "{err}");
        Ok(())
    }
}
