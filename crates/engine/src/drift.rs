//! Drift measures computed by weir: the population stability index (PSI)
//! and the Kullback–Leibler divergence between a reference and a current
//! histogram over the same bins.

/// Added to every bin's share before comparing, so an empty bin gives a
/// large but finite contribution instead of an infinity.
pub const EPSILON: f64 = 1e-4;

/// Why two histograms cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Different numbers of bins.
    #[error("reference has {reference} bins and current has {current}: give both the same bins")]
    Bins {
        /// Bins of the reference.
        reference: usize,
        /// Bins of the current.
        current: usize,
    },
    /// Fewer than two bins, a negative or non-finite count, or all zeros.
    #[error("{0} must be at least two bins of non-negative counts or shares, not all zero")]
    Counts(&'static str),
}

/// Each bin's share of the total, smoothed by [`EPSILON`] and renormalised.
fn shares(counts: &[f64], what: &'static str) -> Result<Vec<f64>, Error> {
    let total: f64 = counts.iter().sum();
    if counts.len() < 2 || counts.iter().any(|c| !c.is_finite() || *c < 0.0) || total <= 0.0 {
        return Err(Error::Counts(what));
    }
    let smoothed: Vec<f64> = counts.iter().map(|c| c / total + EPSILON).collect();
    let sum: f64 = smoothed.iter().sum();
    Ok(smoothed.into_iter().map(|s| s / sum).collect())
}

fn pair(reference: &[f64], current: &[f64]) -> Result<(Vec<f64>, Vec<f64>), Error> {
    if reference.len() != current.len() {
        return Err(Error::Bins {
            reference: reference.len(),
            current: current.len(),
        });
    }
    Ok((shares(reference, "reference")?, shares(current, "current")?))
}

/// PSI = Σ (current − reference) · ln(current / reference).
pub fn psi(reference: &[f64], current: &[f64]) -> Result<f64, Error> {
    let (r, c) = pair(reference, current)?;
    Ok(r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum())
}

/// KL(current ‖ reference) = Σ current · ln(current / reference).
pub fn kl(reference: &[f64], current: &[f64]) -> Result<f64, Error> {
    let (r, c) = pair(reference, current)?;
    Ok(r.iter().zip(&c).map(|(r, c)| c * (c / r).ln()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn identical_histograms_do_not_drift() {
        assert!(close(
            psi(&[10.0, 20.0, 70.0], &[1.0, 2.0, 7.0]).expect("valid"),
            0.0
        ));
        assert!(close(kl(&[0.5, 0.5], &[0.5, 0.5]).expect("valid"), 0.0));
    }

    #[test]
    fn values_worked_out_by_hand() {
        // Shares 0.5/0.5 against 0.8/0.2 (smoothing moves them by ~1e-4):
        // PSI = 0.3·ln(1.6) + (−0.3)·ln(0.4) = 0.1410 + 0.2749 = 0.4159
        // KL  = 0.8·ln(1.6) + 0.2·ln(0.4)   = 0.3760 − 0.1833 = 0.1927
        assert!(close(
            psi(&[50.0, 50.0], &[80.0, 20.0]).expect("valid"),
            0.4159
        ));
        assert!(close(
            kl(&[50.0, 50.0], &[80.0, 20.0]).expect("valid"),
            0.1927
        ));
    }

    #[test]
    fn an_empty_bin_is_smoothed_not_infinite() {
        let value = psi(&[50.0, 50.0, 0.0], &[40.0, 40.0, 20.0]).expect("valid");
        assert!(value.is_finite() && value > 1.0, "{value}");
    }

    #[test]
    fn mismatched_or_empty_histograms_are_refused() {
        assert_eq!(
            psi(&[1.0, 2.0], &[1.0]),
            Err(Error::Bins {
                reference: 2,
                current: 1
            })
        );
        assert_eq!(
            kl(&[0.0, 0.0], &[1.0, 1.0]),
            Err(Error::Counts("reference"))
        );
        assert_eq!(
            psi(&[1.0, -1.0], &[1.0, 1.0]),
            Err(Error::Counts("reference"))
        );
    }
}
