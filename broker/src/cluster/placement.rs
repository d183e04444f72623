//! Where replicas should live: the plans behind the admin API's Rebalance and
//! Decommission. Pure functions of the partitions' current voters and the live brokers;
//! the plans are committed as per-partition *targets* in the metadata log, and each
//! partition's leader then changes its group's membership one step at a time (see the
//! Raft driver) until its voters are the target.

use std::collections::BTreeMap;

/// (Raft group id, its voters).
pub type Placement = Vec<(u64, Vec<u64>)>;

fn counts(partitions: &Placement, brokers: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for (_, voters) in partitions {
        for v in voters {
            if let Some(c) = counts.get_mut(v) {
                *c += 1;
            }
        }
    }
    counts
}

/// Spreads each topic's replicas over the brokers (within one of each other), then evens
/// the brokers' totals, moving as few replicas as possible. Topic by topic first, so that
/// a broker added to the cluster takes part in every topic, not only in the largest ones
/// (evening the totals alone could give it nothing but `__consumer_offsets` partitions).
/// `topics` holds each topic's partitions; returns the new voters of those that change.
pub fn rebalance(topics: &[Placement], brokers: &[u64]) -> Placement {
    if brokers.is_empty() {
        return vec![];
    }
    let mut targets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for topic in topics {
        even_out(topic, brokers, &mut targets);
    }
    let all: Placement = topics.iter().flatten().cloned().collect();
    even_out(&all, brokers, &mut targets);
    targets.into_iter().collect()
}

/// Moves replicas of `partitions` (as `targets` already moves them) from the most to the
/// least loaded broker until every broker holds within one of the others.
fn even_out(partitions: &Placement, brokers: &[u64], targets: &mut BTreeMap<u64, Vec<u64>>) {
    let current: Placement = partitions
        .iter()
        .map(|(g, v)| (*g, targets.get(g).cloned().unwrap_or_else(|| v.clone())))
        .collect();
    let mut counts = counts(&current, brokers);
    let mut moved: std::collections::BTreeSet<u64> = Default::default();
    let max_moves = current.iter().map(|(_, v)| v.len()).sum::<usize>();
    for _ in 0..max_moves {
        let (&hi, &most) = counts
            .iter()
            .max_by_key(|(b, c)| (**c, std::cmp::Reverse(**b)))
            .unwrap();
        let (&lo, &least) = counts.iter().min_by_key(|(b, c)| (**c, **b)).unwrap();
        if most <= least + 1 {
            break;
        }
        // A partition on `hi` that `lo` does not hold yet, one not moved already first.
        let candidate = current
            .iter()
            .map(|(g, v)| (*g, targets.get(g).cloned().unwrap_or_else(|| v.clone())))
            .filter(|(_, v)| v.contains(&hi) && !v.contains(&lo))
            .min_by_key(|(g, _)| moved.contains(g) || targets.contains_key(g));
        let Some((group, mut voters)) = candidate else {
            break;
        };
        for v in voters.iter_mut() {
            if *v == hi {
                *v = lo;
            }
        }
        targets.insert(group, voters);
        moved.insert(group);
        *counts.get_mut(&hi).unwrap() -= 1;
        *counts.get_mut(&lo).unwrap() += 1;
    }
}

/// Replaces `node` in every partition that has it with the least loaded other broker
/// that the partition does not have yet. Errors name a partition that has nowhere to go.
pub fn decommission(partitions: &Placement, brokers: &[u64], node: u64) -> Result<Placement, u64> {
    let others: Vec<u64> = brokers.iter().copied().filter(|b| *b != node).collect();
    let mut counts = counts(partitions, &others);
    let mut targets = Vec::new();
    for (group, voters) in partitions.iter().filter(|(_, v)| v.contains(&node)) {
        let replacement = counts
            .iter()
            .filter(|(b, _)| !voters.contains(b))
            .min_by_key(|(b, c)| (**c, **b))
            .map(|(b, _)| *b)
            .ok_or(*group)?;
        *counts.get_mut(&replacement).unwrap() += 1;
        let voters = voters
            .iter()
            .map(|v| if *v == node { replacement } else { *v })
            .collect();
        targets.push((*group, voters));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(p: &Placement, b: u64) -> usize {
        p.iter().filter(|(_, v)| v.contains(&b)).count()
    }

    fn applied(p: &Placement, t: &Placement) -> Placement {
        p.iter()
            .map(|(g, v)| {
                let v = t
                    .iter()
                    .find(|(tg, _)| tg == g)
                    .map_or(v.clone(), |(_, tv)| tv.clone());
                (*g, v)
            })
            .collect()
    }

    #[test]
    fn a_new_broker_gets_its_share_and_nobody_holds_a_partition_twice() {
        let before: Placement = (1..=6).map(|g| (g, vec![1, 2, 3])).collect();
        let targets = rebalance(std::slice::from_ref(&before), &[1, 2, 3, 4]);
        let after = applied(&before, &targets);
        for b in 1..=4 {
            let n = load(&after, b);
            assert!((4..=5).contains(&n), "broker {b} holds {n}: {after:?}");
        }
        for (_, v) in &after {
            let mut d = v.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
        assert_eq!(targets.len(), 4, "moves only what it must: {targets:?}");
        assert!(
            rebalance(&[after], &[1, 2, 3, 4]).is_empty(),
            "balanced is a fixed point"
        );
    }

    #[test]
    fn a_new_broker_takes_part_in_every_topic_not_only_the_largest() {
        // 16 offsets partitions on every broker, then a small topic of 2 x RF 2.
        let offsets: Placement = (1..=16).map(|g| (g, vec![1, 2, 3])).collect();
        let small: Placement = vec![(17, vec![1, 3]), (18, vec![1, 2])];
        let targets = rebalance(&[offsets.clone(), small.clone()], &[1, 2, 3, 4]);
        let after = applied(&small, &targets);
        assert_eq!(load(&after, 4), 1, "{targets:?}");
        let total: Placement = offsets.into_iter().chain(small).collect();
        let after = applied(&total, &targets);
        for b in 1..=4 {
            assert!((12..=14).contains(&load(&after, b)), "{after:?}");
        }
    }

    #[test]
    fn decommission_moves_every_replica_off_the_node() {
        let before: Placement = vec![(1, vec![1, 2, 3]), (2, vec![2, 3, 4]), (3, vec![4, 1, 2])];
        let targets = decommission(&before, &[1, 2, 3, 4], 4).unwrap();
        let after = applied(&before, &targets);
        assert_eq!(load(&after, 4), 0);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0], (2, vec![2, 3, 1]));
        assert_eq!(targets[1], (3, vec![3, 1, 2]));
        // Three replicas cannot live on two brokers.
        assert_eq!(decommission(&before, &[1, 2, 4], 4), Err(3));
    }
}
