//! Where a pass's parameter outputs go: the gradient and the gradient's tangent
//! `H v`, each dense (an N-vector), at a mask's entries only (a k-vector), or not
//! wanted. Outputs accumulate, so the passes over the batches of a dataset add up.

use std::ops::Range;

use super::mask_plan::{EntryMask, MaskPlan};
use crate::backend::{Backend, Scalar};
use crate::model::layout::ParamLayout;
use crate::model::ops::AdjointOut;

/// Where one output (the gradient, or `H v`) goes.
pub(crate) enum Sink<'a, T: Scalar, B: Backend<T>> {
    None,
    /// A dense N-vector.
    Dense(B::ViewMut<'a>),
    /// The k-vector of a mask (its small tensors through dense scratch, one buffer
    /// per small masked tensor, as [`MaskPlan::output_scratch`] makes them).
    Masked {
        plan: &'a MaskPlan<T, B>,
        out: B::ViewMut<'a>,
        small_out: Vec<B::ViewMut<'a>>,
    },
}

impl<'a, T: Scalar, B: Backend<T>> Sink<'a, T, B> {
    fn is_dense(&self) -> bool {
        matches!(self, Sink::Dense(_))
    }

    /// Whether tensor `e`'s output is wanted.
    fn wants(&self, e: usize) -> bool {
        match self {
            Sink::None => false,
            Sink::Dense(_) => true,
            Sink::Masked { plan, .. } => plan.entry(e).is_some(),
        }
    }

    /// The lowest stage with a wanted tensor (`usize::MAX` when nothing is).
    fn lowest_stage(&self) -> usize {
        match self {
            Sink::None => usize::MAX,
            Sink::Dense(_) => 0,
            Sink::Masked { plan, .. } => plan.lowest_stage(),
        }
    }

    /// The outputs of tensors `e1` and `e2` (`e1` before `e2` in the layout).
    fn route(
        &mut self,
        b: &B,
        layout: &ParamLayout,
        e1: Option<usize>,
        e2: Option<usize>,
    ) -> (AdjointOut<'_, T, B>, AdjointOut<'_, T, B>) {
        let range = |e: Option<usize>| e.map(|e| layout.entries()[e].range());
        match self {
            Sink::None => (AdjointOut::Skip, AdjointOut::Skip),
            Sink::Dense(v) => {
                let (a, c) = carve2(b, b.reborrow(v), range(e1), range(e2));
                (
                    a.map_or(AdjointOut::Skip, AdjointOut::Dense),
                    c.map_or(AdjointOut::Skip, AdjointOut::Dense),
                )
            }
            Sink::Masked {
                plan,
                out,
                small_out,
            } => {
                let plan: &MaskPlan<T, B> = plan;
                let mask = |e: Option<usize>| e.and_then(|e| plan.entry(e));
                let (m1, m2) = (mask(e1), mask(e2));
                let sparse = |em: Option<&EntryMask<B::Index>>| {
                    em.filter(|x| x.small.is_none()).map(|x| x.k_range.clone())
                };
                let (o1, o2) = carve2(b, b.reborrow(out), sparse(m1), sparse(m2));
                let (s1, s2) = (m1.and_then(|x| x.small), m2.and_then(|x| x.small));
                let mut small: Vec<Option<B::ViewMut<'_>>> = small_out
                    .iter_mut()
                    .enumerate()
                    .map(|(i, v)| (Some(i) == s1 || Some(i) == s2).then(|| b.reborrow(v)))
                    .collect();
                (
                    masked_out(m1, o1, &mut small),
                    masked_out(m2, o2, &mut small),
                )
            }
        }
    }
}

/// Where a pass's results go (accumulated, so batches add up).
pub(crate) struct Outputs<'a, T: Scalar, B: Backend<T>> {
    pub grad: Sink<'a, T, B>,
    pub tangent: Sink<'a, T, B>,
    /// Per layout entry: its ranges of the dense outputs still hold values from
    /// before this computation. Such an entry is zeroed when first handed out,
    /// unless its first write replaces it whole; the dense outputs need no zeroing
    /// pass of their own (for OPT-125m, 500 MB).
    stale: Vec<bool>,
}

/// The outputs of one parameter tensor.
pub(crate) struct ParamOut<'a, T: Scalar, B: Backend<T>> {
    pub grad: AdjointOut<'a, T, B>,
    pub tangent: AdjointOut<'a, T, B>,
    /// Its dense outputs hold stale values, to be overwritten by the first write.
    pub replace: bool,
}

impl<T: Scalar, B: Backend<T>> ParamOut<'_, T, B> {
    /// Zeroes the dense outputs.
    fn zero_dense(&mut self, b: &B) {
        for out in [&mut self.grad, &mut self.tangent] {
            if let AdjointOut::Dense(v) = out {
                b.zero(b.reborrow(v));
            }
        }
    }
}

/// The output of one tensor under a mask: its sparse range of the k-vector, or its
/// small tensor's dense scratch.
fn masked_out<'x, T: Scalar, B: Backend<T>>(
    em: Option<&'x EntryMask<B::Index>>,
    sparse: Option<B::ViewMut<'x>>,
    small: &mut [Option<B::ViewMut<'x>>],
) -> AdjointOut<'x, T, B> {
    match em {
        None => AdjointOut::Skip,
        Some(EntryMask { small: Some(s), .. }) => {
            AdjointOut::Dense(small[*s].take().expect("small scratch taken once")) // invariant: `route` reborrowed the scratch of each small entry it asked for
        }
        Some(x) => AdjointOut::Sparse {
            idx: &x.idx,
            out: sparse.expect("sparse entry has an output range"), // invariant: `carve2` returns a view for every sparse entry it was given
        },
    }
}

/// Two sub-views of `view` at disjoint ranges (the first before the second).
fn carve2<'x, T: Scalar, B: Backend<T>>(
    b: &B,
    view: B::ViewMut<'x>,
    r1: Option<Range<usize>>,
    r2: Option<Range<usize>>,
) -> (Option<B::ViewMut<'x>>, Option<B::ViewMut<'x>>) {
    match (r1, r2) {
        (None, None) => (None, None),
        (Some(r), None) => (Some(b.sub_mut(view, r)), None),
        (None, Some(r)) => (None, Some(b.sub_mut(view, r))),
        (Some(r1), Some(r2)) => {
            assert!(r1.end <= r2.start, "carve2: ranges out of order");
            let (lo, hi) = b.split_mut(view, r2.start);
            (Some(b.sub_mut(lo, r1)), Some(b.sub_mut(hi, 0..r2.len())))
        }
    }
}

impl<'a, T: Scalar, B: Backend<T>> Outputs<'a, T, B> {
    /// Outputs into `grad` and `tangent`, whose dense N-vectors hold arbitrary values
    /// (every entry of them is written by the passes and [`Outputs::finish`]). A
    /// masked sink is the caller's to zero: it is small, and its sparse entries are
    /// only ever added to.
    pub fn new(layout: &ParamLayout, grad: Sink<'a, T, B>, tangent: Sink<'a, T, B>) -> Self {
        let dense = grad.is_dense() || tangent.is_dense();
        Outputs {
            grad,
            tangent,
            stale: vec![dense; layout.entries().len()],
        }
    }

    /// Zeroes the outputs of the tensors that no pass reached.
    pub fn finish(&mut self, b: &B, layout: &ParamLayout) {
        for e in 0..self.stale.len() {
            if self.stale[e] {
                self.take1(b, layout, Some(e));
            }
        }
    }

    /// Whether any output of tensor `e` is wanted.
    pub fn wants(&self, e: Option<usize>) -> bool {
        e.is_some_and(|e| self.grad.wants(e) || self.tangent.wants(e))
    }

    /// The lowest stage (see `MaskPlan::new`) whose tensors need an output: the
    /// reverse sweep stops below it.
    pub fn lowest_stage(&self) -> usize {
        self.grad.lowest_stage().min(self.tangent.lowest_stage())
    }

    /// The outputs of tensors `e1` and `e2` (`e1` before `e2` in the layout). Stale
    /// dense outputs are zeroed first, except those of `e1` when `e1_whole` (the
    /// caller's first write covers all of `e1` and can replace instead of add).
    pub fn take2(
        &mut self,
        b: &B,
        layout: &ParamLayout,
        e1: Option<usize>,
        e2: Option<usize>,
        e1_whole: bool,
    ) -> (ParamOut<'_, T, B>, ParamOut<'_, T, B>) {
        let mut was_stale =
            |e: Option<usize>| e.is_some_and(|e| std::mem::replace(&mut self.stale[e], false));
        let (stale1, stale2) = (was_stale(e1), was_stale(e2));
        let (g1, g2) = self.grad.route(b, layout, e1, e2);
        let (t1, t2) = self.tangent.route(b, layout, e1, e2);
        let mut out1 = ParamOut {
            grad: g1,
            tangent: t1,
            replace: stale1 && e1_whole,
        };
        let mut out2 = ParamOut {
            grad: g2,
            tangent: t2,
            replace: false,
        };
        if stale1 && !e1_whole {
            out1.zero_dense(b);
        }
        if stale2 {
            out2.zero_dense(b);
        }
        (out1, out2)
    }

    pub fn take1(&mut self, b: &B, layout: &ParamLayout, e: Option<usize>) -> ParamOut<'_, T, B> {
        self.take2(b, layout, e, None, false).0
    }
}
