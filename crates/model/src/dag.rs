//! The step graph: `needs` resolved to steps, its checks (unknown targets,
//! self-dependencies, cycles printed as their path) and the orders the
//! engine and `weir plan` walk it in.

use crate::diag::{Code, Diagnostic, did_you_mean};
use crate::pipeline::{Pipeline, Spanned};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// The steps of a pipeline as a graph; edges go from a step to the steps
/// that need it.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// For each step, the indexes of the steps it needs.
    needs: Vec<Vec<usize>>,
}

impl Dag {
    /// The graph of a validated pipeline.
    pub fn new(pipeline: &Pipeline) -> Dag {
        let steps: Vec<(&Spanned<String>, &[Spanned<String>])> = pipeline
            .steps
            .iter()
            .map(|s| (&s.id, s.needs.as_slice()))
            .collect();
        build(&steps, &mut Vec::new())
    }

    /// The step ids, in file order; indexes below refer to this order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The index of step `id`.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The steps `step` needs directly.
    pub fn needs(&self, step: usize) -> &[usize] {
        &self.needs[step]
    }

    /// Whether `ancestor` must finish before `step` starts, directly or
    /// through other steps.
    pub fn is_upstream(&self, ancestor: usize, step: usize) -> bool {
        let mut seen = vec![false; self.ids.len()];
        let mut stack = self.needs[step].clone();
        while let Some(next) = stack.pop() {
            if next == ancestor {
                return true;
            }
            if !std::mem::replace(&mut seen[next], true) {
                stack.extend_from_slice(&self.needs[next]);
            }
        }
        false
    }

    /// The steps in layers: a step's layer is one more than the deepest of
    /// its needs, so each layer can start once those before it finished.
    /// Within a layer, steps keep file order. Steps on a cycle are left out.
    pub fn layers(&self) -> Vec<Vec<usize>> {
        // Kahn's algorithm over "is needed by" edges.
        let n = self.ids.len();
        let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut waiting: Vec<usize> = self.needs.iter().map(Vec::len).collect();
        for (step, needs) in self.needs.iter().enumerate() {
            for &need in needs {
                needed_by[need].push(step);
            }
        }
        let mut depth: Vec<Option<usize>> = vec![None; n];
        let mut ready: Vec<usize> = (0..n).filter(|&s| waiting[s] == 0).collect();
        for &step in &ready {
            depth[step] = Some(0);
        }
        while let Some(step) = ready.pop() {
            let next_depth = depth[step].map_or(0, |d| d + 1);
            for &next in &needed_by[step] {
                depth[next] = Some(depth[next].map_or(next_depth, |d| d.max(next_depth)));
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.push(next);
                }
            }
        }
        let mut layers: Vec<Vec<usize>> = Vec::new();
        for (step, d) in depth.into_iter().enumerate() {
            if let Some(d) = d {
                if layers.len() <= d {
                    layers.resize(d + 1, Vec::new());
                }
                layers[d].push(step);
            }
        }
        layers
    }
}

/// Builds the graph of `steps` (id, needs), reporting unknown needs,
/// self-dependencies and cycles into `diags`.
pub(crate) fn build(
    steps: &[(&Spanned<String>, &[Spanned<String>])],
    diags: &mut Vec<Diagnostic>,
) -> Dag {
    let ids: Vec<String> = steps.iter().map(|(id, _)| id.value.clone()).collect();
    let mut index: HashMap<String, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        // With duplicate ids (already reported) the first one wins.
        index.entry(id.clone()).or_insert(i);
    }
    let mut needs = vec![Vec::new(); steps.len()];
    for (step, (id, step_needs)) in steps.iter().enumerate() {
        for need in step_needs.iter() {
            match index.get(&need.value) {
                Some(&target) if target == step => diags.push(Diagnostic::error(
                    need.pos,
                    Code::SelfNeed,
                    format!(
                        "step '{}' needs itself: remove '{}' from its needs",
                        id.value, need.value
                    ),
                )),
                Some(&target) => needs[step].push(target),
                None => {
                    let hint = did_you_mean(&need.value, ids.iter().map(String::as_str));
                    diags.push(Diagnostic::error(
                        need.pos,
                        Code::UnknownNeed,
                        format!("unknown step '{}' in needs{hint}", need.value),
                    ));
                }
            }
        }
    }
    let dag = Dag { ids, index, needs };
    report_cycles(&dag, steps, diags);
    dag
}

fn report_cycles(
    dag: &Dag,
    steps: &[(&Spanned<String>, &[Spanned<String>])],
    diags: &mut Vec<Diagnostic>,
) {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(dag.ids.len(), 0);
    let nodes: Vec<NodeIndex> = (0..dag.ids.len()).map(|i| graph.add_node(i)).collect();
    for (step, needs) in dag.needs.iter().enumerate() {
        for &need in needs {
            graph.add_edge(nodes[need], nodes[step], ());
        }
    }
    let mut components: Vec<Vec<usize>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut steps: Vec<usize> = c.into_iter().map(|n| graph[n]).collect();
            steps.sort_unstable();
            steps
        })
        .collect();
    components.sort();
    for component in components {
        let start = component[0];
        let path = cycle_path(dag, &component, start);
        // Point at the need of the first step that closes the circle.
        let closing = path[path.len() - 2];
        let pos = steps[start]
            .1
            .iter()
            .find(|n| n.value == dag.ids[closing])
            .map_or(steps[start].0.pos, |n| n.pos);
        let names: Vec<&str> = path.iter().map(|&i| dag.ids[i].as_str()).collect();
        diags.push(Diagnostic::error(
            pos,
            Code::Cycle,
            format!(
                "cycle: {} (each step runs after the one before it; remove one of these needs)",
                names.join(" -> ")
            ),
        ));
    }
}

/// A path start -> … -> start inside one strongly connected component, in
/// the order the steps would run (a step before the steps that need it).
fn cycle_path(dag: &Dag, component: &[usize], start: usize) -> Vec<usize> {
    // Breadth-first over "is needed by" edges inside the component finds the
    // shortest way back to `start`.
    let n = dag.ids.len();
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &step in component {
        for &need in &dag.needs[step] {
            if component.binary_search(&need).is_ok() {
                needed_by[need].push(step);
            }
        }
    }
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(step) = queue.pop_front() {
        for &next in &needed_by[step] {
            if next == start {
                let mut path = vec![start, step];
                let mut at = step;
                while let Some(p) = parent[at] {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                // path now runs start -> … -> step; close it.
                let mut closed: Vec<usize> = path;
                closed.push(start);
                closed.dedup();
                return closed;
            }
            if next != start && parent[next].is_none() {
                parent[next] = Some(step);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Pos;

    fn sp(s: &str) -> Spanned<String> {
        Spanned::new(s.to_owned(), Pos::START)
    }

    fn graph(spec: &[(&str, &[&str])]) -> (Dag, Vec<Diagnostic>) {
        let ids: Vec<Spanned<String>> = spec.iter().map(|(id, _)| sp(id)).collect();
        let needs: Vec<Vec<Spanned<String>>> = spec
            .iter()
            .map(|(_, n)| n.iter().map(|s| sp(s)).collect())
            .collect();
        let steps: Vec<(&Spanned<String>, &[Spanned<String>])> = ids
            .iter()
            .zip(&needs)
            .map(|(i, n)| (i, n.as_slice()))
            .collect();
        let mut diags = Vec::new();
        let dag = build(&steps, &mut diags);
        (dag, diags)
    }

    #[test]
    fn cycle_is_printed_as_its_path() {
        let (_, diags) = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.starts_with("cycle: a -> c -> b -> a"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn two_step_cycle() {
        let (_, diags) = graph(&[("x", &["y"]), ("y", &["x"])]);
        assert!(
            diags[0].message.starts_with("cycle: x -> y -> x"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn layers_and_upstream() {
        let (dag, diags) = graph(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &[]),
        ]);
        assert!(diags.is_empty());
        assert_eq!(dag.layers(), vec![vec![0, 4], vec![1, 2], vec![3]]);
        assert!(dag.is_upstream(0, 3));
        assert!(!dag.is_upstream(4, 3));
        assert!(!dag.is_upstream(3, 0));
    }

    #[test]
    fn unknown_and_self_needs() {
        let (_, diags) = graph(&[("train", &[]), ("b", &["trian", "b"])]);
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown step 'trian' in needs (did you mean 'train'?)",
                "step 'b' needs itself: remove 'b' from its needs"
            ]
        );
    }
}
