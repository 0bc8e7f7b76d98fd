//! Verdicts: what a spectral estimate's numbers can be used for, said in words.
//!
//! Every command that prints eigenvalues, densities or traces prints one of these
//! beside them, so that a glance at the output tells whether the numbers can be
//! used and, when they cannot, why not and what budget would fix it. The wording
//! lives here, once, so that `spectrum`, `probe`, `sweep` and the report agree.
//!
//! Lanczos separates two verdicts (see [`super::lanczos`](mod@super::lanczos)): per pair, whether the
//! computed residual met the tolerance (the value is then an eigenvalue to that
//! accuracy), and per run, whether the multiplicity check concluded (the values
//! are then the `k` extreme eigenvalues counting multiplicity, with no repeated
//! eigenvalue listed once). A run whose residuals converged but whose check the
//! budget cut short has accurate values with unverified multiplicities, which is
//! not a failure and is not printed as one.

use serde::{Deserialize, Serialize};

use super::lanczos::LanczosResult;
use super::trace::TraceEstimate;
use crate::report::table::{format_float, format_significant};

/// What a Lanczos run established, in numbers (serialized into summaries) and in
/// words ([`Self::text`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanczosVerdict {
    /// Pairs reported.
    pub pairs: usize,
    /// Pairs whose residual met the tolerance.
    pub residuals_converged: usize,
    /// Whether the multiplicity check was part of the run.
    pub multiplicities_checked: bool,
    /// Whether it concluded: the values are the extreme ones counting multiplicity.
    pub multiplicities_verified: bool,
    /// Products used, and the budget.
    pub products: u64,
    pub max_products: u64,
    /// About the budget with which the multiplicity check would conclude, when the
    /// budget cut it short ([`LanczosResult::products_to_verify`]).
    pub products_to_verify: Option<u64>,
    /// How many more products than `max_products` that is.
    pub additional_products_to_verify: Option<u64>,
}

impl LanczosVerdict {
    /// The verdict of a Lanczos result.
    pub fn of<V>(result: &LanczosResult<V>) -> Self {
        LanczosVerdict {
            pairs: result.eigenvalues.len(),
            residuals_converged: result.residual_converged.iter().filter(|&&c| c).count(),
            multiplicities_checked: result.multiplicities_checked,
            multiplicities_verified: result.multiplicities_verified,
            products: result.products,
            max_products: result.max_products,
            products_to_verify: result.products_to_verify,
            additional_products_to_verify: result
                .products_to_verify
                .map(|n| n.saturating_sub(result.max_products)),
        }
    }

    /// Every residual met the tolerance: the values can be used as eigenvalues.
    pub fn residuals_ok(&self) -> bool {
        self.residuals_converged == self.pairs
    }

    /// One sentence: whether the values can be used, and when something is missing,
    /// what `knob` (the flag or key that sets the budget, e.g. `--iters`) must be
    /// raised to.
    pub fn text(&self, knob: &str) -> String {
        let pairs = self.pairs;
        if !self.residuals_ok() {
            let missing = pairs - self.residuals_converged;
            let check = if self.multiplicities_checked {
                " (the multiplicity check starts only after every residual meets it)"
            } else {
                ""
            };
            return format!(
                "NOT CONVERGED: {missing} of {pairs} residuals above the tolerance after {} \
                 products, so those values are only estimates; raise {knob}{check}",
                self.products
            );
        }
        let residuals = match pairs {
            1 => "the residual is within the tolerance".to_string(),
            2 => "both residuals within the tolerance".to_string(),
            _ => format!("all {pairs} residuals within the tolerance"),
        };
        if !self.multiplicities_checked {
            return format!("{residuals}; multiplicities not checked");
        }
        if self.multiplicities_verified {
            return format!(
                "{residuals}; multiplicities verified (no missed copy of a repeated eigenvalue)"
            );
        }
        let raise = match self.products_to_verify {
            Some(n) => format!("raise {knob} to about {n}"),
            None => format!("raise {knob}"),
        };
        format!(
            "{residuals} (the values are accurate); multiplicities not verified within {} \
             products: {raise} to check for missed repeated eigenvalues",
            self.max_products
        )
    }
}

/// How a pair's residual is printed: `residual 4.4e-15`, and when it missed the
/// tolerance, `residual 2.1e-6, above tolerance`.
pub fn residual_note(residual: f64, residual_converged: bool) -> String {
    if residual_converged {
        format!("residual {residual:.1e}")
    } else {
        format!("residual {residual:.1e}, above tolerance")
    }
}

/// One sentence on a trace estimate: its 95% interval, the interval's half-width
/// relative to the estimate, and, when the interval holds zero, that the sign is
/// not determined (raise `knob`).
pub fn trace_text(estimate: &TraceEstimate, knob: &str) -> String {
    let (lo, hi) = estimate.interval(0.95);
    let half = 0.5 * (hi - lo);
    let mut text = format!(
        "{} ± {} (95%: {} to {}",
        format_float(estimate.estimate),
        format_float(estimate.standard_error),
        format_float(lo),
        format_float(hi)
    );
    if estimate.estimate != 0.0 {
        text.push_str(&format!(
            ", ±{}%",
            format_significant(100.0 * half / estimate.estimate.abs(), 3)
        ));
    }
    text.push(')');
    if lo <= 0.0 && hi >= 0.0 {
        text.push_str(&format!(
            "; the interval holds 0, so not even the sign is known: raise {knob}"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(converged: usize, checked: bool, verified: bool, needed: Option<u64>) -> String {
        LanczosVerdict {
            pairs: 10,
            residuals_converged: converged,
            multiplicities_checked: checked,
            multiplicities_verified: verified,
            products: 90,
            max_products: 100,
            products_to_verify: needed,
            additional_products_to_verify: None,
        }
        .text("--iters")
    }

    #[test]
    fn verdicts_say_what_is_known_and_what_it_would_take() {
        assert_eq!(
            verdict(10, true, false, Some(148)),
            "all 10 residuals within the tolerance (the values are accurate); multiplicities \
             not verified within 100 products: raise --iters to about 148 to check for missed \
             repeated eigenvalues"
        );
        assert_eq!(
            verdict(10, true, true, None),
            "all 10 residuals within the tolerance; multiplicities verified (no missed copy of a \
             repeated eigenvalue)"
        );
        assert_eq!(
            verdict(10, false, false, None),
            "all 10 residuals within the tolerance; multiplicities not checked"
        );
        assert_eq!(
            verdict(8, true, false, None),
            "NOT CONVERGED: 2 of 10 residuals above the tolerance after 90 products, so those \
             values are only estimates; raise --iters (the multiplicity check starts only after \
             every residual meets it)"
        );
        assert_eq!(residual_note(4.4466e-15, true), "residual 4.4e-15");
        assert_eq!(
            residual_note(2.1e-6, false),
            "residual 2.1e-6, above tolerance"
        );
    }

    #[test]
    fn trace_verdicts_give_the_relative_width_and_flag_an_unknown_sign() {
        // 20 samples: t(0.975, 19) = 2.0930, so the half-width is 0.20930.
        let estimate = TraceEstimate {
            method: "hutch++".into(),
            estimate: 2.0,
            standard_error: 0.1,
            products: 60,
            samples: 20,
        };
        assert_eq!(
            trace_text(&estimate, "--trace-products"),
            "2 ± 0.1 (95%: 1.7907 to 2.2093, ±10.5%)"
        );
        let wide = TraceEstimate {
            standard_error: 1.5,
            ..estimate
        };
        let text = trace_text(&wide, "--trace-products");
        assert!(
            text.ends_with(
                "the interval holds 0, so not even the sign is known: raise --trace-products"
            ),
            "{text}"
        );
    }
}
