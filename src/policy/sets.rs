//! ④ What each requested name stands for, grouped when a snapshot is built. Deployments that no
//! rule of any policy can tell apart (the same model, price and place as far as any check or
//! preference looks, and the same static verdict and `order` position under every rule) are
//! decided once for all of them: `auto` over a thousand deployments costs one check per group,
//! not one per deployment.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::compile::{CompiledRule, RefusalKind};
use super::table::{MIN_GROUPS, Table};
use crate::catalog::Task;
use crate::config::spec::{Kind, Locality};
use crate::config::{Deployment, Route, Snapshot};

/// Deployments a requested name stands for, in configuration order, and the same deployments
/// by group.
#[derive(Debug, Default)]
pub(crate) struct Set {
    /// Ascending: the order refusals are listed in.
    members: Vec<usize>,
    /// The members again, group after group: ascending within a group, groups in the order of
    /// their first member.
    grouped: Vec<usize>,
    /// Where each group ends in `grouped`.
    ends: Vec<usize>,
    /// By rule (its number among every policy's rules): what it decides of the groups whatever
    /// the request, made on first use. Empty for a set of one group, which is scanned. Boxed:
    /// every set of two groups has a slot per rule, and most slots stay empty.
    tables: Box<[OnceLock<Option<Box<Table>>>]>,
}

impl Set {
    /// `members` (ascending) grouped by their class.
    fn of(members: Vec<usize>, class_of: &[usize], rules: usize) -> Set {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut at: HashMap<usize, usize> = HashMap::new();
        for &i in &members {
            // A deployment without a class (none is) would be a group of its own.
            let g = match class_of.get(i) {
                Some(c) => *at.entry(*c).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                }),
                None => {
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            if let Some(group) = groups.get_mut(g) {
                group.push(i);
            }
        }
        let mut grouped = Vec::with_capacity(members.len());
        let mut ends = Vec::with_capacity(groups.len());
        for g in groups {
            grouped.extend(g);
            ends.push(grouped.len());
        }
        let tables = if ends.len() >= MIN_GROUPS {
            (0..rules).map(|_| OnceLock::new()).collect()
        } else {
            Box::default()
        };
        Set {
            members,
            grouped,
            ends,
            tables,
        }
    }
}

/// What a requested name stands for, ready to decide: one deployment, or a grouped set.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    One(usize),
    Set(Arc<Set>),
}

impl Default for Target {
    fn default() -> Self {
        Target::Set(Arc::default())
    }
}

impl Target {
    /// The deployments, ascending.
    pub(crate) fn members(&self) -> &[usize] {
        match self {
            Target::One(i) => std::slice::from_ref(i),
            Target::Set(s) => &s.members,
        }
    }

    /// The table of rule number `rule` over this target, made by `build` on first use; `None`
    /// for a target of few groups, or a rule that needs the scan.
    pub(crate) fn table(
        &self,
        rule: usize,
        build: impl FnOnce() -> Option<Table>,
    ) -> Option<&Table> {
        match self {
            Target::One(_) => None,
            Target::Set(s) => s
                .tables
                .get(rule)?
                .get_or_init(|| build().map(Box::new))
                .as_deref(),
        }
    }

    /// The table of rule number `rule` over this target, if one was made.
    pub(crate) fn built(&self, rule: usize) -> Option<&Table> {
        match self {
            Target::One(_) => None,
            Target::Set(s) => s.tables.get(rule)?.get()?.as_deref(),
        }
    }

    /// How many groups.
    pub(crate) fn group_count(&self) -> usize {
        match self {
            Target::One(_) => 1,
            Target::Set(s) => s.ends.len(),
        }
    }

    /// Group `g` (in the order [`Target::groups`] gives them); empty past the last.
    pub(crate) fn group(&self, g: usize) -> &[usize] {
        match self {
            Target::One(i) if g == 0 => std::slice::from_ref(i),
            Target::One(_) => &[],
            Target::Set(s) => {
                let start = match g.checked_sub(1) {
                    Some(before) => s.ends.get(before).copied().unwrap_or(usize::MAX),
                    None => 0,
                };
                let end = s.ends.get(g).copied().unwrap_or(0);
                s.grouped.get(start..end).unwrap_or_default()
            }
        }
    }

    /// The groups: deployments alike to every rule, so that one decides for all.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &[usize]> {
        let (grouped, ends): (&[usize], &[usize]) = match self {
            Target::One(i) => (std::slice::from_ref(i), &[1]),
            Target::Set(s) => (&s.grouped, &s.ends),
        };
        let mut start = 0;
        ends.iter().map(move |&end| {
            let g = grouped.get(start..end).unwrap_or_default();
            start = end;
            g
        })
    }
}

/// What a requested name stands for in the route table.
#[derive(Debug)]
enum Entry {
    Target(Target),
    /// `auto`: every deployment of a (non-test) model for the endpoint's task.
    Auto,
}

/// Every requested name's deployments, grouped, for one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Sets {
    /// By deployment: its class. Deployments of one class are alike to every rule.
    class_of: Vec<usize>,
    /// How many rules every policy has together.
    rules: usize,
    /// `auto` for chat, and for embeddings.
    auto: [Target; 2],
    /// Model ids, served names and deployment names.
    named: crate::base::FastMap<String, Entry>,
}

fn task_slot(task: Task) -> usize {
    match task {
        Task::Chat => 0,
        Task::Embedding => 1,
    }
}

impl Sets {
    /// The sets of `snapshot`'s names, grouped by what `rules` (every rule of every policy)
    /// see of each deployment.
    pub(crate) fn build(snapshot: &Snapshot, rules: &[&CompiledRule]) -> Sets {
        let deployments = &snapshot.deployments;
        let class_of = classes(deployments, rules);
        let auto = [Task::Chat, Task::Embedding].map(|task| {
            let members = deployments
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.model.test_only && d.model.task == task)
                .map(|(i, _)| i)
                .collect();
            Target::Set(Arc::new(Set::of(members, &class_of, rules.len())))
        });
        let named = snapshot
            .routes()
            .map(|(name, route)| {
                let entry = match route {
                    Route::Deployment(i) => Entry::Target(Target::One(*i)),
                    Route::Model(idx) => Entry::Target(Target::Set(Arc::new(Set::of(
                        idx.clone(),
                        &class_of,
                        rules.len(),
                    )))),
                    Route::Auto => Entry::Auto,
                };
                (name.to_owned(), entry)
            })
            .collect();
        Sets {
            class_of,
            rules: rules.len(),
            auto,
            named,
        }
    }

    /// An alias's deployments (ascending), grouped.
    pub(crate) fn grouped(&self, members: Vec<usize>) -> Target {
        Target::Set(Arc::new(Set::of(members, &self.class_of, self.rules)))
    }

    /// What `name` stands for, for a request of `task`.
    pub(crate) fn target(&self, name: &str, task: Task) -> Option<&Target> {
        match self.named.get(name)? {
            Entry::Target(t) => Some(t),
            Entry::Auto => self.auto.get(task_slot(task)),
        }
    }

    /// The class of deployment `i`.
    pub(crate) fn class(&self, i: usize) -> Option<usize> {
        self.class_of.get(i).copied()
    }
}

/// What any rule can see of a deployment. Equal signatures, equal decisions: the checks of
/// the request read only the model, the price and whether it is OpenAI's (and the name, in
/// one message, rendered per deployment); ranking reads the `order` position, the place, the
/// price and the model (and observed latency, which a rule that reads it ranks per deployment).
#[derive(PartialEq, Eq, Hash)]
struct Signature {
    model: *const crate::catalog::Model,
    price: [u64; 2],
    locality: Option<Locality>,
    openai: bool,
    /// By rule: the kind of its static refusal, and the `order` position.
    rules: Vec<(Option<RefusalKind>, Option<usize>)>,
}

/// By deployment: a class number, equal for deployments of equal signature.
fn classes(deployments: &[Arc<Deployment>], rules: &[&CompiledRule]) -> Vec<usize> {
    let mut ids: HashMap<Signature, usize> = HashMap::new();
    deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let sig = Signature {
                model: Arc::as_ptr(&d.model),
                price: [d.price.input.to_bits(), d.price.output.to_bits()],
                locality: d.locality(),
                openai: d.endpoint.kind == Kind::Openai,
                rules: rules
                    .iter()
                    .map(|r| {
                        let kind = r.static_refusal.get(i).and_then(|s| s.as_ref());
                        (kind.map(|s| s.kind), r.order.get(i).copied().flatten())
                    })
                    .collect(),
            };
            let next = ids.len();
            *ids.entry(sig).or_insert(next)
        })
        .collect()
}
