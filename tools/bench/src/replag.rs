//! Persistent-data replication lag under load (`--lag-metrics`): the receiving DC's session
//! replicator counts, per origin DC, the time from each change's commit at the origin to its
//! apply there (`meerkat_replicator_data_apply_lag_seconds`, a histogram). Read before and
//! after a run, the difference is the run's changes: with the archive on, every chat message
//! is two archive records, so that is the archive's replication lag.

/// Cumulative bucket counts of the histogram for `origin`: (upper bound in seconds, count).
pub async fn read(url: &str, origin: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let text = reqwest::get(url).await?.error_for_status()?.text().await?;
    Ok(parse(&text, origin))
}

fn parse(text: &str, origin: &str) -> Vec<(f64, u64)> {
    let prefix = "meerkat_replicator_data_apply_lag_seconds_bucket{";
    let dc = format!("dc=\"{origin}\"");
    let mut buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter(|l| l.contains(&dc))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.trim().parse().ok()?;
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The changes between two readings, and the bucket bound under which quantile `q` of them
/// falls (seconds), for each of `qs`.
pub fn quantiles(before: &[(f64, u64)], after: &[(f64, u64)], qs: &[f64]) -> (u64, Vec<f64>) {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0, |(_, m)| *m);
            (*le, n.saturating_sub(was))
        })
        .collect();
    let total = delta.last().map_or(0, |(_, n)| *n);
    let bounds = qs
        .iter()
        .map(|q| {
            let want = (q * total as f64).ceil() as u64;
            delta
                .iter()
                .find(|(_, n)| *n >= want.max(1))
                .map_or(f64::NAN, |(le, _)| *le)
        })
        .collect();
    (total, bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE meerkat_replicator_data_apply_lag_seconds histogram
meerkat_replicator_data_apply_lag_seconds_bucket{dc="dc1",le="0.001"} 0
meerkat_replicator_data_apply_lag_seconds_bucket{dc="dc1",le="0.002"} 50
meerkat_replicator_data_apply_lag_seconds_bucket{dc="dc1",le="0.004"} 99
meerkat_replicator_data_apply_lag_seconds_bucket{dc="dc1",le="+Inf"} 100
meerkat_replicator_data_apply_lag_seconds_bucket{dc="dc3",le="0.001"} 7
"#;

    #[test]
    fn quantiles_come_from_the_difference_of_two_readings() {
        let after = parse(TEXT, "dc1");
        assert_eq!(after.len(), 4);
        let before = vec![(0.001, 0), (0.002, 40), (0.004, 40), (f64::INFINITY, 40)];
        // 60 changes in the run: 10 under 2 ms, 49 more under 4 ms, one above.
        let (n, q) = quantiles(&before, &after, &[0.1, 0.5, 0.98, 1.0]);
        assert_eq!(n, 60);
        assert_eq!(&q[..3], &[0.002, 0.004, 0.004]);
        assert!(q[3].is_infinite());
    }
}
