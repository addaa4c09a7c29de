//! Weighted random choice, the power of two choices, and sticky cookies,
//! pure and synchronous: no tokio, no I/O, no sibling imports.
//!
//! The caller passes an eligibility-aware weight for each item (0 = skip), so a
//! pick passes over ineligible upstreams and pools without any stored weight
//! being changed, and their share falls to the others in proportion.

pub mod sticky;

/// Index of an item chosen with probability `weight(item) / sum of weights`,
/// or `None` when every weight is 0.
///
/// `roll` is a uniformly random `u64`; passing it in keeps this function
/// deterministic for tests. Weights are bounded at config time (≤ 1e6 per
/// item), so the modulo bias of `roll % total` is below 1e-12.
pub fn pick<T>(items: &[T], weight: impl Fn(&T) -> u32, roll: u64) -> Option<usize> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut point = roll % total;
    let mut last_positive = None;
    for (index, item) in items.iter().enumerate() {
        let w = u64::from(weight(item));
        if w == 0 {
            continue;
        }
        if point < w {
            return Some(index);
        }
        point -= w;
        last_positive = Some(index);
    }
    // Weights read from atomics can drop between the two passes; the point
    // then lies past the end, and the last eligible item is as good a choice.
    last_positive
}

/// The power of two choices (least request): two distinct items drawn by
/// their `weights` (`rolls`), and of the two the one with less `load` (by
/// index) per unit of weight; a tie goes to the first draw. Idle (equal
/// loads), the choice is therefore plain weighted random; under load, a
/// slow item — whose requests pile up — loses most draws, without any
/// scan of the whole set or shared state beyond each item's own load.
pub fn pick_least_loaded(
    weights: &[u32],
    load: impl Fn(usize) -> usize,
    rolls: (u64, u64),
) -> Option<usize> {
    let first = pick(weights, |w| *w, rolls.0)?;
    let chosen = &weights[first];
    let second = pick(
        weights,
        |w| if std::ptr::eq(w, chosen) { 0 } else { *w },
        rolls.1,
    );
    let Some(second) = second else {
        return Some(first);
    };
    // load / weight compared without division: a·w₂ against b·w₁.
    let per_weight = |at: usize, other: usize| load(at) as u128 * u128::from(weights[other].max(1));
    if per_weight(second, first) < per_weight(first, second) {
        Some(second)
    } else {
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn least_loaded_of_two_draws() {
        let loads = [5usize, 0];
        for roll in 0..8 {
            let got = pick_least_loaded(&[1, 1], |i| loads[i], (roll, roll / 2));
            assert_eq!(got, Some(1), "roll {roll}");
        }
        // Load per unit of weight: 6 on weight 3 is lighter than 3 on 1.
        let loads = [3usize, 6];
        assert_eq!(pick_least_loaded(&[1, 3], |i| loads[i], (0, 0)), Some(1));
        // One eligible item, or none.
        assert_eq!(pick_least_loaded(&[0, 2], |_| 9, (1, 1)), Some(1));
        assert_eq!(pick_least_loaded(&[0], |_| 0, (1, 1)), None);
    }

    #[test]
    fn all_zero_is_none() {
        assert_eq!(pick(&[0u32, 0, 0], |w| *w, 7), None);
        assert_eq!(pick::<u32>(&[], |w| *w, 7), None);
    }

    #[test]
    fn walks_cumulative_weights() {
        let w = [1u32, 0, 3];
        assert_eq!(pick(&w, |w| *w, 0), Some(0));
        assert_eq!(pick(&w, |w| *w, 1), Some(2));
        assert_eq!(pick(&w, |w| *w, 3), Some(2));
        assert_eq!(pick(&w, |w| *w, 4), Some(0));
    }

    /// Over 20,000 choices by `choose` (given a random source), how far
    /// the furthest item's share is from its weight's share, in points;
    /// `None` if a zero-weight item was chosen.
    fn worst_share_error(
        weights: &[u32],
        seed: u64,
        choose: impl Fn(&mut fastrand::Rng) -> usize,
    ) -> Option<f64> {
        let total: u32 = weights.iter().sum();
        let mut rng = fastrand::Rng::with_seed(seed);
        let rounds = 20_000;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..rounds {
            counts[choose(&mut rng)] += 1;
        }
        let mut worst: f64 = 0.0;
        for (count, w) in counts.iter().zip(weights) {
            if *w == 0 && *count > 0 {
                return None;
            }
            let want = f64::from(*w) / f64::from(total);
            let got = f64::from(*count) / f64::from(rounds);
            worst = worst.max((want - got).abs());
        }
        Some(worst)
    }

    proptest! {
        /// Over many rolls, each item's share is within 3 points of its weight share,
        /// and zero-weight items are never chosen.
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(0u32..20, 1..12), seed in any::<u64>()) {
            prop_assume!(weights.iter().sum::<u32>() > 0);
            let worst = worst_share_error(&weights, seed, |rng| {
                pick(&weights, |w| *w, rng.u64(..)).expect("some weight is positive")
            });
            prop_assert!(worst.is_some_and(|w| w < 0.03), "{:?}", worst);
        }

        /// With equal loads, the power of two choices keeps each item's
        /// weight share (ties go to the first, weighted, draw).
        #[test]
        fn least_loaded_idle_follows_weights(weights in proptest::collection::vec(0u32..20, 1..12), seed in any::<u64>()) {
            prop_assume!(weights.iter().sum::<u32>() > 0);
            let worst = worst_share_error(&weights, seed, |rng| {
                pick_least_loaded(&weights, |_| 0, (rng.u64(..), rng.u64(..)))
                    .expect("some weight is positive")
            });
            prop_assert!(worst.is_some_and(|w| w < 0.03), "{:?}", worst);
        }

        /// Marking items ineligible (weight 0 through the closure) never lets them be picked.
        #[test]
        fn ineligible_never_chosen(weights in proptest::collection::vec(1u32..10, 1..20), mask in any::<u32>(), roll in any::<u64>()) {
            let eligible = |i: usize| mask & (1 << i) != 0;
            let indexed: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
            match pick(&indexed, |(i, w)| if eligible(*i) { *w } else { 0 }, roll) {
                Some(i) => prop_assert!(eligible(i)),
                None => prop_assert!((0..weights.len()).all(|i| !eligible(i))),
            }
        }
    }
}
