//! A mask prepared for masked passes: its sorted flat indices split by tensor.

use std::ops::Range;

use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::layout::ParamLayout;
use crate::model::ops::Tangent;

/// A mask split by tensor, on a backend. Matrices get sparse tangents and sampled
/// gradients; small tensors (biases, LayerNorm parameters) get dense scratch
/// copies, which costs nothing.
pub struct MaskPlan<T: Scalar, B: Backend<T>> {
    k: usize,
    per_entry: Vec<Option<EntryMask<B::Index>>>,
    /// The small masked tensors and their dense tangents (filled per call).
    small: Vec<SmallTangent<B::Buf>>,
    lowest_stage: usize,
    _scalar: std::marker::PhantomData<T>,
}

/// One tensor's part of a mask.
pub(crate) struct EntryMask<Index> {
    /// Where this tensor's entries sit in the k-vector.
    pub k_range: Range<usize>,
    /// Their flat indices inside the tensor.
    pub idx: Index,
    /// Index into `MaskPlan::small` for a small tensor.
    pub small: Option<usize>,
}

struct SmallTangent<Buf> {
    entry: usize,
    len: usize,
    tangent: Buf,
}

impl<T: Scalar, B: Backend<T>> MaskPlan<T, B> {
    /// Splits the sorted, distinct flat indices `mask` (as in [`crate::mask::Mask`]) by
    /// tensor of `layout`. `stage_of(e)` is the pass stage of tensor `e` (the
    /// architecture's order of evaluation: a reverse sweep that wants only masked
    /// outputs stops below the lowest stage that holds one).
    pub fn new(
        b: &B,
        layout: &ParamLayout,
        stage_of: impl Fn(usize) -> usize,
        mask: &[u64],
    ) -> Result<Self> {
        let n = layout.total() as u64;
        if let Some(w) = mask.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::arg(
                "mask",
                format!(
                    "indices must be sorted and distinct ({} then {})",
                    w[0], w[1]
                ),
            ));
        }
        if let Some(&last) = mask.last()
            && last >= n
        {
            return Err(Error::arg(
                "mask",
                format!("index {last} is outside the {n} parameters"),
            ));
        }
        let mut per_entry: Vec<Option<EntryMask<B::Index>>> = Vec::new();
        let mut small = Vec::new();
        let mut lowest_stage = usize::MAX;
        let mut start = 0;
        for (e, entry) in layout.entries().iter().enumerate() {
            let range = entry.range();
            let end = start + mask[start..].partition_point(|&i| i < range.end as u64);
            if end == start {
                per_entry.push(None);
                continue;
            }
            lowest_stage = lowest_stage.min(stage_of(e));
            let local: Vec<u32> = mask[start..end]
                .iter()
                .map(|&i| (i - range.start as u64) as u32)
                .collect();
            let is_small = entry.shape.len() == 1;
            if is_small {
                small.push(SmallTangent {
                    entry: e,
                    len: entry.len(),
                    tangent: b.zeros(entry.len())?,
                });
            }
            per_entry.push(Some(EntryMask {
                k_range: start..end,
                idx: b.upload_index(&local)?,
                small: is_small.then(|| small.len() - 1),
            }));
            start = end;
        }
        Ok(MaskPlan {
            k: mask.len(),
            per_entry,
            small,
            lowest_stage,
            _scalar: std::marker::PhantomData,
        })
    }

    /// Number of masked coordinates k.
    pub fn len(&self) -> usize {
        self.k
    }

    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Tensor `e`'s part of the mask, if any.
    pub(crate) fn entry(&self, e: usize) -> Option<&EntryMask<B::Index>> {
        self.per_entry[e].as_ref()
    }

    /// The masked tensors: `(layout entry, its part)`, in layout order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (usize, &EntryMask<B::Index>)> {
        self.per_entry
            .iter()
            .enumerate()
            .filter_map(|(e, m)| m.as_ref().map(|m| (e, m)))
    }

    /// The lowest pass stage holding a masked tensor.
    pub(crate) fn lowest_stage(&self) -> usize {
        self.lowest_stage
    }

    fn small_mask(&self, s: &SmallTangent<B::Buf>) -> &EntryMask<B::Index> {
        self.per_entry[s.entry]
            .as_ref()
            .expect("small tensor is masked") // invariant: `small` is built from masked entries only
    }

    /// The tangent of tensor `e` for the k-vector `values` (after [`MaskPlan::load`]).
    pub(crate) fn tangent<'a>(&'a self, b: &B, e: usize, values: B::View<'a>) -> Tangent<'a, T, B> {
        match &self.per_entry[e] {
            None => Tangent::Zero,
            Some(em) => match em.small {
                Some(s) => Tangent::Dense(b.view(&self.small[s].tangent)),
                None => Tangent::Sparse {
                    idx: &em.idx,
                    values: b.sub(values, em.k_range.clone()),
                },
            },
        }
    }

    /// Zeroed output scratch for the small masked tensors (one buffer each).
    pub(crate) fn output_scratch(&self, b: &B) -> Result<Vec<B::Buf>> {
        self.small.iter().map(|s| b.zeros(s.len)).collect()
    }

    /// Before a pass: densifies the small tensors' tangents from `values` (the k-vector).
    pub(crate) fn load(&mut self, b: &B, values: B::View<'_>) {
        let ranges: Vec<Range<usize>> = self
            .small
            .iter()
            .map(|s| self.small_mask(s).k_range.clone())
            .collect();
        for (s, range) in self.small.iter_mut().zip(ranges) {
            b.zero(b.view_mut(&mut s.tangent));
            let em = self.per_entry[s.entry]
                .as_ref()
                .expect("small tensor is masked"); // invariant: as in `small_mask`
            b.scatter(b.view_mut(&mut s.tangent), &em.idx, b.sub(values, range));
        }
    }

    /// After a pass: adds the small tensors' outputs at the mask into `out` (the k-vector).
    pub(crate) fn store(&self, b: &B, mut out: B::ViewMut<'_>, scratch: &[B::Buf]) {
        for (s, buf) in self.small.iter().zip(scratch) {
            let em = self.small_mask(s);
            let dst = b.sub_mut(b.reborrow(&mut out), em.k_range.clone());
            b.gather_add(dst, &em.idx, b.view(buf));
        }
    }
}
