//! Where replicas should live: a new topic's assignment, and the plans behind the admin
//! API's Rebalance and Decommission. Pure functions of the partitions' current voters,
//! the live brokers and their racks; the plans are committed as per-partition *targets*
//! in the metadata log, and each partition's leader then changes its group's membership
//! one step at a time (see the Raft driver) until its voters are the target.
//!
//! Racks come first: a partition's replicas go to as many racks as it has replicas (or
//! as there are racks), as Kafka's rack-aware assignment does, so that losing a rack
//! (a zone) loses at most its share of each partition. Brokers without a rack count as
//! racks of their own, so a cluster without racks is placed as if racks did not exist.

use std::collections::{BTreeMap, BTreeSet};

/// (Raft group id, its voters).
pub type Placement = Vec<(u64, Vec<u64>)>;

/// The rack of each broker that has one.
#[derive(Debug, Clone, Default)]
pub struct Racks(BTreeMap<u64, String>);

/// A failure domain: a named rack, or a broker without one (a domain of its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Domain<'a> {
    Rack(&'a str),
    Alone(u64),
}

impl Racks {
    pub fn new(racks: impl IntoIterator<Item = (u64, Option<String>)>) -> Self {
        Racks(
            racks
                .into_iter()
                .filter_map(|(id, rack)| rack.map(|r| (id, r)))
                .collect(),
        )
    }

    fn of(&self, broker: u64) -> Domain<'_> {
        self.0
            .get(&broker)
            .map_or(Domain::Alone(broker), |r| Domain::Rack(r))
    }

    /// How many racks `voters` span.
    pub fn spanned(&self, voters: &[u64]) -> usize {
        voters
            .iter()
            .map(|b| self.of(*b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// How many racks a partition of `replicas` replicas should span among `brokers`.
    fn wanted(&self, replicas: usize, brokers: &[u64]) -> usize {
        replicas.min(self.spanned(brokers))
    }

    /// `brokers` (sorted) taking turns by rack: the first of each rack, then the second
    /// of each, ... (Kafka's rack-alternated list), so that consecutive brokers sit in
    /// different racks. Without racks: `brokers` as given.
    fn alternated(&self, brokers: &[u64]) -> Vec<u64> {
        let mut by_rack: BTreeMap<Domain<'_>, Vec<u64>> = BTreeMap::new();
        for b in brokers {
            by_rack.entry(self.of(*b)).or_default().push(*b);
        }
        let mut out = Vec::with_capacity(brokers.len());
        for round in 0.. {
            let before = out.len();
            out.extend(by_rack.values().filter_map(|ids| ids.get(round)));
            if out.len() == before {
                break;
            }
        }
        out
    }
}

/// Places `rf` replicas of each of `partitions` partitions on `brokers` (sorted ids) as
/// Kafka does: partition i starts at broker `start + i` of the rack-alternated list and
/// takes the next brokers in racks it does not have yet (any broker once every rack is
/// used), so the first replica (the preferred leader) rotates, leadership spreads evenly
/// and replicas spread over racks.
pub fn assign(
    brokers: &[u64],
    racks: &Racks,
    partitions: i32,
    rf: usize,
    start: usize,
) -> Vec<Vec<u64>> {
    let order = racks.alternated(brokers);
    let n = order.len();
    let rf = rf.min(n);
    let all_racks = racks.spanned(brokers);
    (0..partitions.max(0) as usize)
        .map(|i| {
            let mut replicas = Vec::with_capacity(rf);
            let mut used = BTreeSet::new();
            for step in 0..n {
                let b = order[(start + i + step) % n];
                if used.len() < all_racks && used.contains(&racks.of(b)) {
                    continue;
                }
                used.insert(racks.of(b));
                replicas.push(b);
                if replicas.len() == rf {
                    break;
                }
            }
            // Racks used up before `rf` replicas: the rest from any broker not chosen.
            for step in 0..n {
                if replicas.len() == rf {
                    break;
                }
                let b = order[(start + i + step) % n];
                if !replicas.contains(&b) {
                    replicas.push(b);
                }
            }
            replicas
        })
        .collect()
}

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
/// Racks before counts: partitions spanning fewer racks than they could are spread first,
/// and no move that evens counts makes a partition span fewer racks.
/// `topics` holds each topic's partitions; returns the new voters of those that change.
pub fn rebalance(topics: &[Placement], brokers: &[u64], racks: &Racks) -> Placement {
    if brokers.is_empty() {
        return vec![];
    }
    let mut targets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let all: Placement = topics.iter().flatten().cloned().collect();
    spread_over_racks(&all, brokers, racks, &mut targets);
    for topic in topics {
        even_out(topic, brokers, racks, &mut targets);
    }
    even_out(&all, brokers, racks, &mut targets);
    targets.into_iter().collect()
}

/// Gives each partition whose replicas share racks they need not share a replica in a
/// rack it lacks: a replica from its most crowded rack moves to the least loaded broker
/// of such a rack (a topic made before racks were set, or brokers added in new racks).
fn spread_over_racks(
    partitions: &Placement,
    brokers: &[u64],
    racks: &Racks,
    targets: &mut BTreeMap<u64, Vec<u64>>,
) {
    let mut counts = counts(partitions, brokers);
    for (group, voters) in partitions {
        let mut voters = targets
            .get(group)
            .cloned()
            .unwrap_or_else(|| voters.clone());
        let mut changed = false;
        while racks.spanned(&voters) < racks.wanted(voters.len(), brokers) {
            // The last replica of a rack holding more than one (the first stays: it is
            // the preferred leader).
            let Some(pos) = (0..voters.len()).rev().find(|&i| {
                voters[..i]
                    .iter()
                    .any(|v| racks.of(*v) == racks.of(voters[i]))
            }) else {
                break;
            };
            let used: BTreeSet<_> = voters.iter().map(|v| racks.of(*v)).collect();
            let Some(to) = counts
                .iter()
                .filter(|(b, _)| !used.contains(&racks.of(**b)))
                .min_by_key(|(b, c)| (**c, **b))
                .map(|(b, _)| *b)
            else {
                break;
            };
            if let Some(c) = counts.get_mut(&voters[pos]) {
                *c -= 1;
            }
            *counts.get_mut(&to).unwrap() += 1;
            voters[pos] = to;
            changed = true;
        }
        if changed {
            targets.insert(*group, voters);
        }
    }
}

/// Moves replicas of `partitions` (as `targets` already moves them) from the most to the
/// least loaded broker until every broker holds within one of the others.
/// A move is only taken if the partition spans as many racks after it as before.
fn even_out(
    partitions: &Placement,
    brokers: &[u64],
    racks: &Racks,
    targets: &mut BTreeMap<u64, Vec<u64>>,
) {
    let current: Placement = partitions
        .iter()
        .map(|(g, v)| (*g, targets.get(g).cloned().unwrap_or_else(|| v.clone())))
        .collect();
    let mut counts = counts(&current, brokers);
    let mut moved: BTreeSet<u64> = Default::default();
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
            .filter(|(_, v)| racks.spanned(&replaced(v, hi, lo)) >= racks.spanned(v))
            .min_by_key(|(g, _)| moved.contains(g) || targets.contains_key(g));
        let Some((group, mut voters)) = candidate else {
            break;
        };
        voters = replaced(&voters, hi, lo);
        targets.insert(group, voters);
        moved.insert(group);
        *counts.get_mut(&hi).unwrap() -= 1;
        *counts.get_mut(&lo).unwrap() += 1;
    }
}

/// `voters` with `from` replaced by `to`, in place (the order is the preferred order).
fn replaced(voters: &[u64], from: u64, to: u64) -> Vec<u64> {
    voters
        .iter()
        .map(|v| if *v == from { to } else { *v })
        .collect()
}

/// Replaces `node` in every partition that has it with another broker the partition does
/// not have yet: one in a rack the partition's other replicas do not use if there is
/// one, the least loaded first. Errors name a partition that has nowhere to go.
pub fn decommission(
    partitions: &Placement,
    brokers: &[u64],
    node: u64,
    racks: &Racks,
) -> Result<Placement, u64> {
    let others: Vec<u64> = brokers.iter().copied().filter(|b| *b != node).collect();
    let mut counts = counts(partitions, &others);
    let mut targets = Vec::new();
    for (group, voters) in partitions.iter().filter(|(_, v)| v.contains(&node)) {
        let staying: BTreeSet<_> = voters
            .iter()
            .filter(|v| **v != node)
            .map(|v| racks.of(*v))
            .collect();
        let replacement = counts
            .iter()
            .filter(|(b, _)| !voters.contains(b))
            .min_by_key(|(b, c)| (staying.contains(&racks.of(**b)), **c, **b))
            .map(|(b, _)| *b)
            .ok_or(*group)?;
        *counts.get_mut(&replacement).unwrap() += 1;
        targets.push((*group, replaced(voters, node, replacement)));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Racks {
        Racks::default()
    }

    /// Brokers 1..=n in racks a, b, c, a, b, c, ...
    fn abc(n: u64) -> Racks {
        Racks::new((1..=n).map(|b| (b, Some(["a", "b", "c"][(b as usize - 1) % 3].to_string()))))
    }

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
        let targets = rebalance(std::slice::from_ref(&before), &[1, 2, 3, 4], &none());
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
            rebalance(&[after], &[1, 2, 3, 4], &none()).is_empty(),
            "balanced is a fixed point"
        );
    }

    #[test]
    fn a_new_broker_takes_part_in_every_topic_not_only_the_largest() {
        // 16 offsets partitions on every broker, then a small topic of 2 x RF 2.
        let offsets: Placement = (1..=16).map(|g| (g, vec![1, 2, 3])).collect();
        let small: Placement = vec![(17, vec![1, 3]), (18, vec![1, 2])];
        let targets = rebalance(&[offsets.clone(), small.clone()], &[1, 2, 3, 4], &none());
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
        let targets = decommission(&before, &[1, 2, 3, 4], 4, &none()).unwrap();
        let after = applied(&before, &targets);
        assert_eq!(load(&after, 4), 0);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0], (2, vec![2, 3, 1]));
        assert_eq!(targets[1], (3, vec![3, 1, 2]));
        // Three replicas cannot live on two brokers.
        assert_eq!(decommission(&before, &[1, 2, 4], 4, &none()), Err(3));
    }

    #[test]
    fn assignment_rotates_leaders_and_never_repeats_a_broker() {
        let a = assign(&[1, 2, 3], &none(), 6, 3, 1);
        assert_eq!(a[0], vec![2, 3, 1]);
        assert_eq!(a[1], vec![3, 1, 2]);
        let mut leaders: Vec<u64> = a.iter().map(|r| r[0]).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);
        for r in &a {
            let mut d = r.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
        assert_eq!(assign(&[1, 2, 3], &none(), 2, 1, 0), vec![vec![1], vec![2]]);
    }

    #[test]
    fn assignment_spreads_each_partition_over_racks() {
        // Six brokers in three racks, listed so that neighbours share racks.
        let racks = Racks::new(
            [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
                .map(|(b, r)| (b, Some(r.to_string()))),
        );
        let brokers = [1, 2, 3, 4, 5, 6];
        for start in 0..6 {
            let a = assign(&brokers, &racks, 12, 3, start);
            for r in &a {
                assert_eq!(racks.spanned(r), 3, "{r:?}");
            }
            let mut leaders: Vec<u64> = a.iter().map(|r| r[0]).collect();
            leaders.sort_unstable();
            assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
        }
        // More replicas than racks: every rack, then distinct brokers.
        let a = assign(&[1, 2, 3, 4], &racks, 4, 3, 0);
        for r in &a {
            assert_eq!(racks.spanned(r), 2, "{r:?}");
            let mut d = r.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "{r:?}");
        }
    }

    #[test]
    fn rebalance_spreads_racks_first_and_never_undoes_it() {
        // Placed before racks were known: every partition on 1, 4 (both rack a).
        let racks = abc(6);
        let before: Placement = (1..=6).map(|g| (g, vec![1, 4])).collect();
        let targets = rebalance(std::slice::from_ref(&before), &[1, 2, 3, 4, 5, 6], &racks);
        let after = applied(&before, &targets);
        for (_, v) in &after {
            assert_eq!(racks.spanned(v), 2, "{after:?}");
        }
        for b in 1..=6 {
            assert_eq!(load(&after, b), 2, "broker {b}: {after:?}");
        }
        assert!(rebalance(&[after], &[1, 2, 3, 4, 5, 6], &racks).is_empty());
    }

    #[test]
    fn decommission_replaces_a_replica_within_the_racks_it_leaves() {
        let racks = abc(6);
        // 1 (a), 2 (b), 3 (c): broker 3 leaves; 6 is the only other broker in rack c.
        let before: Placement = vec![(1, vec![1, 2, 3])];
        let targets = decommission(&before, &[1, 2, 3, 4, 5, 6], 3, &racks).unwrap();
        assert_eq!(targets, vec![(1, vec![1, 2, 6])]);
        // With rack c gone, any broker not holding it yet.
        let targets = decommission(&before, &[1, 2, 3, 4, 5], 3, &racks).unwrap();
        assert_eq!(targets, vec![(1, vec![1, 2, 4])]);
    }
}
