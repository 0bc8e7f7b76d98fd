//! Checking the engine against a reference computed elsewhere (PyTorch): the logic of
//! `maskscape verify`.
//!
//! A reference file is a safetensors file in the format of the project's fixtures
//! (`tests/fixtures/README.md`): the inputs (`input_ids`, `attention_mask`, `labels`)
//! and any of `logits`, `loss`, `grad` (with `mask_idx`, also compared at the mask
//! through the masked path: `grad_masked`), `v` with `hvp`, `mask_idx` with `hvp_masked`,
//! `masked_hessian_eigs`, `masked_hessian_trace`, `full_hessian_eigs`,
//! `full_hessian_trace`. Every quantity present is recomputed and compared by its
//! norm-wise relative error `||ours - ref|| / ||ref||` (logits at real positions
//! only: a padding query's output is up to the framework). Hessian spectra are assembled
//! column by column from exact Hessian-vector products, symmetrised, and
//! diagonalised with faer (the full Hessian only when N <= [`MAX_FULL_HESSIAN`]).

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::Memory;
use crate::model::batch::{Batch, Targets, TokenBatch};
use crate::model::objective::Objective;
use crate::model::opt::Opt;
use crate::progress::Progress;

/// The largest N for which the full Hessian is assembled (N Hessian-vector products
/// and an N x N eigendecomposition).
pub const MAX_FULL_HESSIAN: usize = 5000;

/// Allowed norm-wise relative errors per quantity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub logits: f64,
    pub loss: f64,
    pub grad: f64,
    pub hvp: f64,
    pub eigenvalues: f64,
    pub trace: f64,
}

impl Tolerances {
    /// f64: everything to 1e-9 (an exact engine agrees with PyTorch's float64 to ~1e-12).
    pub const F64: Tolerances = Tolerances {
        logits: 1e-9,
        loss: 1e-9,
        grad: 1e-9,
        hvp: 1e-9,
        eigenvalues: 1e-9,
        trace: 1e-9,
    };

    /// f32 against a float64 reference: 1e-5 on logits and the loss (single-precision
    /// rounding, 6e-8, grown through the layers: the fixtures show 3e-7), 1e-4 on
    /// gradients, Hessian-vector products, spectra and traces (the fixtures show at
    /// most 3e-6: derivatives lose a few more digits to cancellation than values).
    pub const F32: Tolerances = Tolerances {
        logits: 1e-5,
        loss: 1e-5,
        grad: 1e-4,
        hvp: 1e-4,
        eigenvalues: 1e-4,
        trace: 1e-4,
    };

    /// The tolerances for computing in `T`.
    pub fn for_scalar<T: Scalar>() -> Tolerances {
        if T::NAME == "f64" {
            Self::F64
        } else {
            Self::F32
        }
    }
}

/// A tensor read from a reference file: values as f64 and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// The contents of a reference file.
#[derive(Clone, Debug)]
pub struct Reference {
    pub path: PathBuf,
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub labels: Vec<i64>,
    pub logits: Option<RefTensor>,
    pub loss: Option<RefTensor>,
    pub grad: Option<RefTensor>,
    pub v: Option<RefTensor>,
    pub hvp: Option<RefTensor>,
    pub mask_idx: Option<Vec<i64>>,
    pub hvp_masked: Option<RefTensor>,
    pub masked_hessian_eigs: Option<RefTensor>,
    pub masked_hessian_trace: Option<RefTensor>,
    pub full_hessian_eigs: Option<RefTensor>,
    pub full_hessian_trace: Option<RefTensor>,
}

/// A tensor as stored: shape, element type and little-endian bytes.
type Stored<'a> = (Vec<usize>, Dtype, &'a [u8]);

fn read_tensor<'a>(st: &SafeTensors<'a>, path: &Path, name: &str) -> Result<Option<Stored<'a>>> {
    match st.tensor(name) {
        Ok(t) => Ok(Some((t.shape().to_vec(), t.dtype(), t.data()))),
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
        Err(e) => Err(Error::file(path, format!("tensor `{name}`: {e}"))),
    }
}

fn floats(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f64>> {
    match dtype {
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()),
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect()),
        other => Err(Error::file(
            path,
            format!("tensor `{name}` must be F64 or F32, found {other:?}"),
        )),
    }
}

fn ints(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<i64>> {
    match dtype {
        Dtype::I64 => Ok(data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()),
        Dtype::I32 => Ok(data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect()),
        other => Err(Error::file(
            path,
            format!("tensor `{name}` must be I64 or I32, found {other:?}"),
        )),
    }
}

impl Reference {
    /// Reads a reference file; a missing or misshaped input tensor is an error naming
    /// the file and the tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
        let int_tensor = |name: &str| -> Result<(Vec<usize>, Vec<i64>)> {
            let (shape, dtype, data) = read_tensor(&st, path, name)?
                .ok_or_else(|| Error::file(path, format!("missing tensor `{name}`")))?;
            Ok((shape, ints(path, name, dtype, data)?))
        };
        let (shape, input_ids) = int_tensor("input_ids")?;
        let [batch, seq] = shape[..] else {
            return Err(Error::file(
                path,
                format!("tensor `input_ids` must be batch x seq, found shape {shape:?}"),
            ));
        };
        let same_shape = |name: &str, (s, v): (Vec<usize>, Vec<i64>)| -> Result<Vec<i64>> {
            if s != shape {
                return Err(Error::file(
                    path,
                    format!("tensor `{name}` has shape {s:?}, expected {shape:?}"),
                ));
            }
            Ok(v)
        };
        let attention_mask = same_shape("attention_mask", int_tensor("attention_mask")?)?;
        let labels = same_shape("labels", int_tensor("labels")?)?;
        let float = |name: &str| -> Result<Option<RefTensor>> {
            read_tensor(&st, path, name)?
                .map(|(shape, dtype, data)| {
                    Ok(RefTensor {
                        values: floats(path, name, dtype, data)?,
                        shape,
                    })
                })
                .transpose()
        };
        let mask_idx = read_tensor(&st, path, "mask_idx")?
            .map(|(_, dtype, data)| ints(path, "mask_idx", dtype, data))
            .transpose()?;
        Ok(Reference {
            path: path.to_path_buf(),
            batch,
            seq,
            input_ids,
            attention_mask,
            labels,
            logits: float("logits")?,
            loss: float("loss")?,
            grad: float("grad")?,
            v: float("v")?,
            hvp: float("hvp")?,
            mask_idx,
            hvp_masked: float("hvp_masked")?,
            masked_hessian_eigs: float("masked_hessian_eigs")?,
            masked_hessian_trace: float("masked_hessian_trace")?,
            full_hessian_eigs: float("full_hessian_eigs")?,
            full_hessian_trace: float("full_hessian_trace")?,
        })
    }

    fn shape_error(&self, name: &str, found: &[usize], expected: &[usize]) -> Error {
        Error::file(
            &self.path,
            format!("tensor `{name}` has shape {found:?}, expected {expected:?} for this model"),
        )
    }

    /// `t`'s values after checking its shape is `expected`.
    fn checked<'r>(&self, name: &str, t: &'r RefTensor, expected: &[usize]) -> Result<&'r [f64]> {
        if t.shape != expected {
            return Err(self.shape_error(name, &t.shape, expected));
        }
        Ok(&t.values)
    }

    /// The reference's inputs as a batch, with token ids checked against `vocab_size`.
    pub fn to_batch(&self, vocab_size: usize) -> Result<Batch> {
        let input_ids = self
            .input_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                u32::try_from(id).ok().filter(|&x| (x as usize) < vocab_size).ok_or_else(|| {
                    Error::file(
                        &self.path,
                        format!(
                            "input_ids: token id {id} at sequence {}, position {} is outside the vocabulary (vocab_size {vocab_size})",
                            i / self.seq,
                            i % self.seq
                        ),
                    )
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let attention_mask = self
            .attention_mask
            .iter()
            .map(|&m| match m {
                0 | 1 => Ok(m as u32),
                _ => Err(Error::file(
                    &self.path,
                    format!("attention_mask: entries must be 0 or 1, found {m}"),
                )),
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Batch {
            tokens: TokenBatch {
                batch: self.batch,
                seq: self.seq,
                input_ids,
                attention_mask,
            },
            targets: Targets::NextToken {
                labels: self.labels.clone(),
            },
        })
    }

    /// The mask as sorted flat indices, checked against N.
    pub fn mask(&self, n: usize) -> Result<Option<Mask>> {
        let Some(idx) = &self.mask_idx else {
            return Ok(None);
        };
        let indices = idx
            .iter()
            .map(|&i| {
                u64::try_from(i).map_err(|_| {
                    Error::file(&self.path, format!("mask_idx: index {i} is negative"))
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        Mask::from_indices(indices, n, &self.path).map(Some)
    }
}

/// One compared quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub quantity: &'static str,
    /// Number of compared values.
    pub count: usize,
    /// Norm-wise relative error (NaN when not computed).
    pub rel_error: f64,
    pub tolerance: f64,
    /// Why the quantity was not compared, if it was not.
    pub skipped: Option<String>,
}

impl Check {
    /// Compared and within tolerance (a skipped quantity passes).
    pub fn passed(&self) -> bool {
        self.skipped.is_some() || self.rel_error <= self.tolerance
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub dtype: &'static str,
    pub num_params: usize,
    pub checks: Vec<Check>,
}

impl VerifyReport {
    /// Whether every compared quantity is within its tolerance.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The check of `quantity`, if the reference held it.
    pub fn check(&self, quantity: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.quantity == quantity)
    }

    /// The report as a table (quantity, values, relative error, tolerance, status).
    pub fn table(&self) -> crate::report::Table {
        let c = &self.checks;
        crate::report::Table::new()
            .with_str(
                "quantity",
                c.iter().map(|c| c.quantity.to_string()).collect(),
            )
            .with_i64("values", c.iter().map(|c| c.count as i64).collect())
            .with_f64("rel_error", c.iter().map(|c| c.rel_error).collect())
            .with_f64("tolerance", c.iter().map(|c| c.tolerance).collect())
            .with_str(
                "status",
                c.iter()
                    .map(|c| match (&c.skipped, c.passed()) {
                        (Some(why), _) => format!("skipped: {why}"),
                        (None, true) => "ok".to_string(),
                        (None, false) => "FAIL".to_string(),
                    })
                    .collect(),
            )
    }
}

/// `||a - b|| / ||b||` (absolute when `b` is zero).
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm > 0.0 { diff / norm } else { diff }
}

fn to_f64<T: Scalar>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

fn from_f64<T: Scalar>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

/// Eigenvalues (ascending) and trace of the symmetric part of the `n x n` matrix
/// whose columns are `columns` (column-major, `n * n` values).
pub fn symmetric_spectrum(columns: &[f64], n: usize) -> Result<(Vec<f64>, f64)> {
    let h = faer::Mat::<f64>::from_fn(n, n, |i, j| 0.5 * (columns[j * n + i] + columns[i * n + j]));
    let eigs = h.self_adjoint_eigenvalues(faer::Side::Lower).map_err(|e| {
        Error::Numerical(format!(
            "symmetric eigendecomposition of a {n} x {n} Hessian: {e:?}"
        ))
    })?;
    let trace = (0..n).map(|i| h[(i, i)]).sum();
    Ok((eigs, trace))
}

/// Recomputes every quantity `reference` holds with `model` and compares.
///
/// Cost: one forward, one forward-over-reverse pass, k masked Hessian-vector
/// products for the masked spectrum, and N for the full one.
pub fn verify<T: Scalar, B: Backend<T>>(
    model: &Opt<T, B>,
    reference: &Reference,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    verify_with(model, reference, Memory::Auto, progress)
}

/// As [`verify`], the passes storing or recomputing the blocks' activations as
/// `memory` says (both must pass).
pub fn verify_with<T: Scalar, B: Backend<T>>(
    model: &Opt<T, B>,
    reference: &Reference,
    memory: Memory,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let tol = Tolerances::for_scalar::<T>();
    let n = model.num_params();
    let vocab = model.config().vocab_size;
    let batch = reference.to_batch(vocab)?;
    let mut objective = Objective::new(model, std::slice::from_ref(&batch))
        .map_err(|e| Error::file(&reference.path, e.to_string()))?;
    objective.set_memory(memory);
    let mut checks = Vec::new();
    let mut push = |quantity: &'static str, ours: &[f64], theirs: &[f64], tolerance: f64| {
        checks.push(Check {
            quantity,
            count: theirs.len(),
            rel_error: rel_error(ours, theirs),
            tolerance,
            skipped: None,
        });
    };

    if let Some(t) = &reference.logits {
        let want = reference.checked("logits", t, &[reference.batch, reference.seq, vocab])?;
        let ours = to_f64(&objective.logits(0)?);
        // Only real positions: what a padding query outputs is up to the framework
        // (PyTorch gives one with no visible key a uniform softmax, maskscape zeros),
        // and never reaches a loss.
        let real = |x: &[f64]| -> Vec<f64> {
            x.chunks(vocab)
                .zip(&reference.attention_mask)
                .filter(|&(_, &m)| m == 1)
                .flat_map(|(row, _)| row.iter().copied())
                .collect()
        };
        push("logits", &real(&ours), &real(want), tol.logits);
    }
    let v = reference
        .v
        .as_ref()
        .map(|t| reference.checked("v", t, &[n]))
        .transpose()?;
    if reference.loss.is_some() || reference.grad.is_some() || reference.hvp.is_some() {
        let (loss, grad, hvp) = match v {
            Some(v) => {
                let r = objective.loss_gradient_hvp(&from_f64::<T>(v))?;
                (r.loss, r.gradient, Some(r.hvp))
            }
            None => {
                let (loss, grad) = objective.gradient()?;
                (loss, grad, None)
            }
        };
        if let Some(t) = &reference.loss {
            push(
                "loss",
                &[loss],
                reference.checked("loss", t, &[1])?,
                tol.loss,
            );
        }
        if let Some(t) = &reference.grad {
            push(
                "grad",
                &to_f64(&grad),
                reference.checked("grad", t, &[n])?,
                tol.grad,
            );
        }
        if let Some(t) = &reference.hvp {
            let hvp = hvp.ok_or_else(|| {
                Error::file(&reference.path, "tensor `hvp` needs the probe vector `v`")
            })?;
            push(
                "hvp",
                &to_f64(&hvp),
                reference.checked("hvp", t, &[n])?,
                tol.hvp,
            );
        }
    }

    if let Some(mask) = reference.mask(n)? {
        let k = mask.len();
        objective.set_mask(mask.indices())?;
        if let Some(t) = &reference.grad {
            // the masked path's own gradient, against the reference's rows at the mask
            let want = reference.checked("grad", t, &[n])?;
            let want: Vec<f64> = mask.indices().iter().map(|&i| want[i as usize]).collect();
            let (_, ours) = objective.masked_gradient()?;
            push("grad_masked", &to_f64(&ours), &want, tol.grad);
        }
        if let Some(t) = &reference.hvp_masked {
            let v = v.ok_or_else(|| {
                Error::file(
                    &reference.path,
                    "tensor `hvp_masked` needs the probe vector `v`",
                )
            })?;
            let vk: Vec<T> = mask
                .indices()
                .iter()
                .map(|&i| T::from_f64(v[i as usize]))
                .collect();
            push(
                "hvp_masked",
                &to_f64(&objective.masked_hvp(&vk)?),
                reference.checked("hvp_masked", t, &[k])?,
                tol.hvp,
            );
        }
        if reference.masked_hessian_eigs.is_some() || reference.masked_hessian_trace.is_some() {
            let columns = assemble(k, progress, "masked Hessian columns", |e| {
                objective.masked_hvp(e)
            })?;
            let (eigs, trace) = symmetric_spectrum(&columns, k)?;
            if let Some(t) = &reference.masked_hessian_eigs {
                push(
                    "masked_hessian_eigs",
                    &eigs,
                    reference.checked("masked_hessian_eigs", t, &[k])?,
                    tol.eigenvalues,
                );
            }
            if let Some(t) = &reference.masked_hessian_trace {
                push(
                    "masked_hessian_trace",
                    &[trace],
                    reference.checked("masked_hessian_trace", t, &[1])?,
                    tol.trace,
                );
            }
        }
    } else if reference.hvp_masked.is_some() || reference.masked_hessian_eigs.is_some() {
        return Err(Error::file(
            &reference.path,
            "masked quantities need the tensor `mask_idx`",
        ));
    }

    if reference.full_hessian_eigs.is_some() || reference.full_hessian_trace.is_some() {
        if n <= MAX_FULL_HESSIAN {
            let columns = assemble(n, progress, "Hessian columns", |e| objective.hvp(e))?;
            let (eigs, trace) = symmetric_spectrum(&columns, n)?;
            if let Some(t) = &reference.full_hessian_eigs {
                push(
                    "full_hessian_eigs",
                    &eigs,
                    reference.checked("full_hessian_eigs", t, &[n])?,
                    tol.eigenvalues,
                );
            }
            if let Some(t) = &reference.full_hessian_trace {
                push(
                    "full_hessian_trace",
                    &[trace],
                    reference.checked("full_hessian_trace", t, &[1])?,
                    tol.trace,
                );
            }
        } else {
            for (quantity, present, tolerance) in [
                (
                    "full_hessian_eigs",
                    reference.full_hessian_eigs.is_some(),
                    tol.eigenvalues,
                ),
                (
                    "full_hessian_trace",
                    reference.full_hessian_trace.is_some(),
                    tol.trace,
                ),
            ] {
                if present {
                    checks.push(Check {
                        quantity,
                        count: 0,
                        rel_error: f64::NAN,
                        tolerance,
                        skipped: Some(format!("N = {n} > {MAX_FULL_HESSIAN}")),
                    });
                }
            }
        }
    }
    Ok(VerifyReport {
        dtype: T::NAME,
        num_params: n,
        checks,
    })
}

/// The `n x n` matrix whose column `j` is `apply(e_j)`, column-major in f64.
fn assemble<T: Scalar>(
    n: usize,
    progress: &dyn Progress,
    label: &str,
    mut apply: impl FnMut(&[T]) -> Result<Vec<T>>,
) -> Result<Vec<f64>> {
    progress.start(n as u64, label);
    let mut columns = Vec::with_capacity(n * n);
    let mut e = vec![T::ZERO; n];
    for j in 0..n {
        progress.check()?;
        e[j] = T::ONE;
        columns.extend(apply(&e)?.iter().map(|x| x.to_f64()));
        e[j] = T::ZERO;
        progress.advance(1);
    }
    Ok(columns)
}
