//! The composition rules: which processor sets are well-formed, and in what
//! order they run.
//!
//! Pure functions over [`Facts`], so every rule is testable without a
//! component. Input order is the author's order (manifest order, or the
//! stored pipeline order after an edit appended to it); the output is a
//! permutation of it:
//!
//! 1. names are unique (swaps and edits address processors by name);
//! 2. at most one processor per singleton group;
//! 3. no two processors provide a tool of the same name;
//! 4. bands run in order pre, normal, post;
//! 5. within a band, the author's order, except that a processor runs after
//!    every processor its `after` list names, when that one is present. The
//!    order is the stable topological one: of the processors whose
//!    dependencies have run, the earliest in the author's order goes next, so
//!    an order that already satisfies every dependency is kept as it is, and
//!    composing a composed harness changes nothing.
//!
//! An `after` that names a processor in a *later* band cannot be honoured
//! and is refused; one that names an earlier band is already satisfied.

use std::collections::HashMap;

use super::error::ComposeError;
use super::Facts;
use crate::sandbox::Band;

/// Check the rules and return the pipeline order as indices into `facts`.
pub fn compose(facts: &[&Facts]) -> Result<Vec<usize>, ComposeError> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, f) in facts.iter().enumerate() {
        if let Some(&first) = by_name.get(f.info.name.as_str()) {
            return Err(ComposeError::DuplicateName { name: f.info.name.clone(), first, second: i });
        }
        by_name.insert(&f.info.name, i);
    }
    let mut groups: HashMap<&str, usize> = HashMap::new();
    for (i, f) in facts.iter().enumerate() {
        if let Some(group) = f.info.group.as_deref() {
            if let Some(&first) = groups.get(group) {
                return Err(ComposeError::GroupConflict {
                    group: group.to_string(),
                    first: facts[first].info.name.clone(),
                    second: f.info.name.clone(),
                    at: i,
                });
            }
            groups.insert(group, i);
        }
    }
    let mut tools: HashMap<&str, usize> = HashMap::new();
    for (i, f) in facts.iter().enumerate() {
        for tool in &f.tools {
            if let Some(&first) = tools.get(tool.as_str()) {
                return Err(ComposeError::ToolCollision {
                    tool: tool.clone(),
                    first: facts[first].info.name.clone(),
                    second: f.info.name.clone(),
                    at: i,
                });
            }
            tools.insert(tool, i);
        }
    }
    // Dependencies that matter for ordering: same band, present, not itself.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); facts.len()];
    for (i, f) in facts.iter().enumerate() {
        for dep in &f.info.after {
            let Some(&j) = by_name.get(dep.as_str()) else { continue };
            if j == i {
                continue;
            }
            let (band, dep_band) = (f.info.band, facts[j].info.band);
            if dep_band > band {
                return Err(ComposeError::AfterLaterBand {
                    name: f.info.name.clone(),
                    band: band_name(band),
                    after: dep.clone(),
                    after_band: band_name(dep_band),
                    at: i,
                });
            }
            if dep_band == band && !deps[i].contains(&j) {
                deps[i].push(j);
            }
        }
    }
    let mut order = Vec::with_capacity(facts.len());
    for band in [Band::Pre, Band::Normal, Band::Post] {
        let members: Vec<usize> = (0..facts.len()).filter(|&i| facts[i].info.band == band).collect();
        let mut placed = vec![false; facts.len()];
        let mut remaining = members.clone();
        while !remaining.is_empty() {
            // The earliest processor whose dependencies have all run.
            let ready = remaining.iter().position(|&i| deps[i].iter().all(|&d| placed[d]));
            match ready {
                Some(k) => {
                    let i = remaining.remove(k);
                    placed[i] = true;
                    order.push(i);
                }
                None => {
                    let cycle = find_cycle(&remaining, &deps);
                    let at = *cycle.iter().min().expect("a cycle has members");
                    return Err(ComposeError::Cycle { cycle: cycle.iter().map(|&i| facts[i].info.name.clone()).collect(), at });
                }
            }
        }
    }
    Ok(order)
}

/// A cycle among `remaining` (each of which has an unplaced dependency),
/// starting from its earliest member, without repeating the first at the end.
fn find_cycle(remaining: &[usize], deps: &[Vec<usize>]) -> Vec<usize> {
    // Walk unplaced dependencies from the earliest stuck node until a node
    // repeats; the walk from that repeat is the cycle.
    let stuck = |i: usize| deps[i].iter().copied().find(|d| remaining.contains(d));
    let mut path = vec![remaining[0]];
    loop {
        let last = *path.last().unwrap();
        let next = stuck(last).expect("every remaining node waits on another remaining node");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle = path[pos..].to_vec();
            // Name it from its earliest member, in "runs after" order reversed
            // into "must run before" order: a → b means a must run before b.
            cycle.reverse();
            let start = cycle.iter().enumerate().min_by_key(|(_, &i)| i).map(|(k, _)| k).unwrap();
            cycle.rotate_left(start);
            return cycle;
        }
        path.push(next);
    }
}

pub(crate) fn band_name(band: Band) -> &'static str {
    match band {
        Band::Pre => "pre",
        Band::Normal => "normal",
        Band::Post => "post",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Hook, Info};

    fn facts(name: &str, band: Band, group: Option<&str>, after: &[&str], tools: &[&str]) -> Facts {
        Facts {
            info: Info {
                name: name.into(),
                version: "0.1.0".into(),
                hooks: vec![Hook::StepStart],
                group: group.map(str::to_string),
                band,
                after: after.iter().map(|s| s.to_string()).collect(),
            },
            tools: tools.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(all: &[Facts]) -> Result<Vec<String>, ComposeError> {
        let refs: Vec<&Facts> = all.iter().collect();
        compose(&refs).map(|order| order.into_iter().map(|i| all[i].info.name.clone()).collect())
    }

    #[test]
    fn bands_run_pre_normal_post_and_keep_author_order_within_a_band() {
        let all = [
            facts("late", Band::Post, None, &[], &[]),
            facts("b", Band::Normal, None, &[], &[]),
            facts("early", Band::Pre, None, &[], &[]),
            facts("a", Band::Normal, None, &[], &[]),
        ];
        assert_eq!(names(&all).unwrap(), ["early", "b", "a", "late"]);
    }

    #[test]
    fn after_moves_a_processor_behind_its_dependency_only_when_present() {
        let all = [
            facts("trim", Band::Normal, None, &["repair"], &[]),
            facts("guard", Band::Normal, None, &["absent"], &[]),
            facts("repair", Band::Normal, None, &[], &[]),
        ];
        assert_eq!(names(&all).unwrap(), ["guard", "repair", "trim"]);
    }

    #[test]
    fn an_order_that_already_satisfies_after_is_kept() {
        let all = [
            facts("a", Band::Normal, None, &[], &[]),
            facts("x", Band::Normal, None, &[], &[]),
            facts("b", Band::Normal, None, &["a"], &[]),
        ];
        assert_eq!(names(&all).unwrap(), ["a", "x", "b"]);
    }

    #[test]
    fn after_naming_an_earlier_band_is_satisfied_and_a_later_band_is_refused() {
        let ok = [facts("n", Band::Normal, None, &["p"], &[]), facts("p", Band::Pre, None, &[], &[])];
        assert_eq!(names(&ok).unwrap(), ["p", "n"]);
        let bad = [facts("p", Band::Pre, None, &["n"], &[]), facts("n", Band::Normal, None, &[], &[])];
        let err = names(&bad).unwrap_err();
        assert_eq!(err.to_string(), "`p` (band pre) asks to run after `n`, which is in the later band normal: bands always run pre, normal, post");
    }

    #[test]
    fn a_cycle_is_refused_naming_the_cycle() {
        let all = [
            facts("free", Band::Normal, None, &[], &[]),
            facts("a", Band::Normal, None, &["c"], &[]),
            facts("b", Band::Normal, None, &["a"], &[]),
            facts("c", Band::Normal, None, &["b"], &[]),
        ];
        let err = names(&all).unwrap_err();
        assert_eq!(err.to_string(), "the `after` dependencies form a cycle: a → b → c → a");
        assert!(matches!(err, ComposeError::Cycle { at: 1, .. }));
    }

    #[test]
    fn a_second_processor_in_a_singleton_group_is_refused() {
        let all = [facts("guard-1", Band::Normal, Some("loop-guard"), &[], &[]), facts("guard-2", Band::Normal, Some("loop-guard"), &[], &[])];
        let err = names(&all).unwrap_err();
        assert_eq!(err.to_string(), "a second processor in singleton group `loop-guard` (`guard-2` joins `guard-1`)");
        assert_eq!(err.hint(), "remove one, or use replace");
    }

    #[test]
    fn colliding_tools_name_both_providers() {
        let all = [facts("notes", Band::Normal, None, &[], &["note_read", "note_write"]), facts("memo", Band::Normal, None, &[], &["note_read"])];
        assert_eq!(names(&all).unwrap_err().to_string(), "tool `note_read` is provided by both `notes` and `memo`");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let all = [facts("x", Band::Normal, None, &[], &[]), facts("x", Band::Post, None, &[], &[])];
        assert!(matches!(names(&all).unwrap_err(), ComposeError::DuplicateName { first: 0, second: 1, .. }));
    }
}
