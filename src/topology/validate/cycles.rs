//! Loops in the stage graph. A record on a loop can circulate forever, so a loop must be
//! declared with `allow_cycle: true` on one of its stages (the executor ⇄ domain-service
//! pattern is the intended use); a declaration on a stage that is on no loop is refused
//! too, because it would silently excuse a loop added later.

use super::Cx;
use std::collections::{BTreeMap, BTreeSet};

/// Reporting stops after this many cycles, and the search after this many steps: the
/// number of cycles can grow exponentially with the stages, a report of the first few is
/// what a person can act on.
const MAX_CYCLES: usize = 20;
const MAX_STEPS: usize = 200_000;

/// Stages (in file order) and, per stage, the stages it feeds with the topics between.
pub(super) struct StageGraph {
    pub(super) names: Vec<String>,
    pub(super) edges: Vec<BTreeMap<usize, BTreeSet<String>>>,
}

impl StageGraph {
    fn build(cx: &Cx<'_>) -> StageGraph {
        let stages = cx.stages_in_file_order();
        let names: Vec<String> = stages.iter().map(|(n, _)| n.to_string()).collect();
        let mut readers: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (_, s)) in stages.iter().enumerate() {
            for t in s.from.to_vec() {
                readers.entry(t).or_default().push(i);
            }
        }
        let mut edges = vec![BTreeMap::<usize, BTreeSet<String>>::new(); stages.len()];
        for (i, (_, s)) in stages.iter().enumerate() {
            // The DLQ counts: a stage that reads its own dead letters loops as well.
            let written = s.to.to_map().into_values().chain(s.dlq.clone());
            for t in written {
                for &r in readers.get(&t).map(Vec::as_slice).unwrap_or_default() {
                    edges[i].entry(r).or_default().insert(t.clone());
                }
            }
        }
        StageGraph { names, edges }
    }

    /// Elementary cycles that avoid the `excluded` stages, each starting at its earliest
    /// stage, in order of that stage.
    pub(super) fn cycles(&self, excluded: &[bool]) -> Vec<Vec<usize>> {
        let mut found = Vec::new();
        let mut steps = 0usize;
        for start in 0..self.names.len() {
            if excluded[start] {
                continue;
            }
            // Only stages after `start` may be visited, so each cycle is found once,
            // from its earliest stage.
            let mut path = vec![start];
            let mut on_path = vec![false; self.names.len()];
            on_path[start] = true;
            let mut next: Vec<usize> = vec![0];
            while let (Some(&top), Some(cursor)) = (path.last(), next.last_mut()) {
                steps += 1;
                if steps > MAX_STEPS || found.len() >= MAX_CYCLES {
                    return found;
                }
                let Some(&target) = self.edges[top].keys().nth(*cursor) else {
                    on_path[top] = false;
                    path.pop();
                    next.pop();
                    continue;
                };
                *cursor += 1;
                if target == start {
                    found.push(path.clone());
                } else if target > start && !excluded[target] && !on_path[target] {
                    on_path[target] = true;
                    path.push(target);
                    next.push(0);
                }
            }
        }
        found
    }

    /// Whether `stage` can reach itself.
    pub(super) fn on_cycle(&self, stage: usize) -> bool {
        let mut seen = vec![false; self.names.len()];
        let mut todo: Vec<usize> = self.edges[stage].keys().copied().collect();
        while let Some(s) = todo.pop() {
            if s == stage {
                return true;
            }
            if !std::mem::replace(&mut seen[s], true) {
                todo.extend(self.edges[s].keys().copied());
            }
        }
        false
    }

    /// `stage `a` → topic `t` → stage `b` → … → stage `a``.
    pub(super) fn describe(&self, cycle: &[usize]) -> String {
        let mut parts = Vec::new();
        for (k, &from) in cycle.iter().enumerate() {
            let to = cycle[(k + 1) % cycle.len()];
            parts.push(format!("stage `{}`", self.names[from]));
            let topics: Vec<String> =
                self.edges[from].get(&to).into_iter().flatten().map(|t| format!("`{t}`")).collect();
            parts.push(format!("topic {}", topics.join(" / ")));
        }
        parts.push(format!("stage `{}`", self.names[cycle[0]]));
        parts.join(" → ")
    }
}

pub(super) fn check(cx: &mut Cx<'_>) {
    let graph = StageGraph::build(cx);
    let stages = cx.stages_in_file_order();
    let allowed: Vec<bool> = stages.iter().map(|(_, s)| s.allow_cycle).collect();
    for cycle in graph.cycles(&allowed) {
        let first = graph.names[cycle[0]].as_str();
        cx.at_key(
            &["stages", first],
            format!(
                "stages form a cycle, so records can circulate forever: {}; if the loop is intended \
                 (e.g. an executor and the services it calls), set `allow_cycle: true` on one stage of it",
                graph.describe(&cycle)
            ),
        );
    }
    for (i, (name, s)) in stages.iter().enumerate() {
        if s.allow_cycle && !graph.on_cycle(i) {
            cx.at_value(
                &["stages", name, "allow_cycle"],
                format!(
                    "stage `{name}` sets `allow_cycle: true` but is on no cycle: remove it, so that a cycle added later is reported"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph from (from, to) stage pairs, topic names `from-to`.
    fn graph(n: usize, pairs: &[(usize, usize)]) -> StageGraph {
        let mut edges = vec![BTreeMap::new(); n];
        for &(a, b) in pairs {
            edges[a].insert(b, BTreeSet::from([format!("t{a}{b}")]));
        }
        StageGraph { names: (0..n).map(|i| format!("s{i}")).collect(), edges }
    }

    #[test]
    fn finds_each_elementary_cycle_once() {
        // 0 ⇄ 1, 1 → 2 → 0, and a self-loop on 3.
        let g = graph(4, &[(0, 1), (1, 0), (1, 2), (2, 0), (3, 3)]);
        assert_eq!(g.cycles(&[false; 4]), vec![vec![0, 1], vec![0, 1, 2], vec![3]]);
        assert_eq!(
            g.describe(&[0, 1, 2]),
            "stage `s0` → topic `t01` → stage `s1` → topic `t12` → stage `s2` → topic `t20` → stage `s0`"
        );
    }

    #[test]
    fn allowed_stage_excuses_only_its_cycles() {
        // 0 ⇄ 1 is excused by 0; 1 ⇄ 2 is not.
        let g = graph(3, &[(0, 1), (1, 0), (1, 2), (2, 1)]);
        assert_eq!(g.cycles(&[true, false, false]), vec![vec![1, 2]]);
    }

    #[test]
    fn on_cycle_and_acyclic() {
        let g = graph(4, &[(0, 1), (1, 2), (2, 1), (2, 3)]);
        assert!(g.cycles(&[false; 4]).len() == 1);
        assert!(!g.on_cycle(0));
        assert!(g.on_cycle(1) && g.on_cycle(2));
        assert!(!g.on_cycle(3));
    }

    #[test]
    fn search_is_bounded() {
        // A complete graph on 12 stages has far more cycles than are reported.
        let pairs: Vec<_> = (0..12).flat_map(|a| (0..12).filter(move |&b| b != a).map(move |b| (a, b))).collect();
        let g = graph(12, &pairs);
        assert_eq!(g.cycles(&[false; 12]).len(), MAX_CYCLES);
    }
}
