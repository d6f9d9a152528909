//! The search for a match: candidates per spec, then a bounded backtracking
//! over the groups of specs that share variables.

use super::*;

/// Why a match could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The search tried `steps` facts without reaching an answer: the specs
    /// are too ambiguous for this inventory (many interchangeable facts and
    /// no solution). Make the specs more precise.
    #[error(
        "hardware match gave up after {steps} search steps: the profile's specs are too ambiguous for this inventory"
    )]
    SearchLimit { steps: usize },
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Match {
    /// Every variable of the spec set and the text it captured.
    pub bindings: BTreeMap<String, String>,
    /// The variables written as `$$name`: the CMDB keys.
    pub cmdb_keys: BTreeSet<String>,
    /// `facts[i]` is the index (in [`Facts::as_slice`]) of the fact that
    /// satisfied spec `i`.
    pub facts: Vec<usize>,
}

impl Match {
    /// The captured values of the CMDB keys.
    pub fn cmdb_values(&self) -> BTreeMap<&str, &str> {
        self.cmdb_keys
            .iter()
            .filter_map(|k| Some((k.as_str(), self.bindings.get(k)?.as_str())))
            .collect()
    }
}

/// Matches an inventory against a spec set. `Ok(None)` when it does not
/// match; use [`explain`] to learn why. `limit` bounds the search steps
/// ([`DEFAULT_STEP_LIMIT`] is a good default).
pub fn matches(specs: &SpecSet, facts: &Facts, limit: usize) -> Result<Option<Match>, MatchError> {
    let Some(candidates) = Candidates::collect_all_nonempty(specs, facts) else {
        return Ok(None);
    };
    let mut search = Search::new(specs, facts, &candidates, specs.len(), limit);
    Ok(search.run()?.then(|| search.to_match()))
}

/// The facts satisfying each spec on its own, variables aside.
pub(super) struct Candidates {
    facts: Vec<usize>,
    spans: Vec<(usize, usize)>,
}

impl Candidates {
    pub(super) fn collect(specs: &SpecSet, facts: &Facts) -> Self {
        let mut out = Candidates::with_capacity(specs.len());
        for spec in &specs.specs {
            out.push(spec, facts);
        }
        out
    }

    /// `None` as soon as a spec has no candidate.
    fn collect_all_nonempty(specs: &SpecSet, facts: &Facts) -> Option<Self> {
        let mut out = Candidates::with_capacity(specs.len());
        for spec in &specs.specs {
            if out.push(spec, facts) == 0 {
                return None;
            }
        }
        Some(out)
    }

    fn with_capacity(specs: usize) -> Self {
        Candidates {
            facts: Vec::with_capacity(4 * specs),
            spans: Vec::with_capacity(specs),
        }
    }

    /// Adds the candidates of the next spec; returns how many it has.
    fn push(&mut self, spec: &Spec, facts: &Facts) -> usize {
        let start = self.facts.len();
        spec.collect_candidates(facts, &mut self.facts);
        self.spans.push((start, self.facts.len()));
        self.facts.len() - start
    }

    pub(super) fn of(&self, spec: usize) -> &[usize] {
        let (start, end) = self.spans[spec];
        &self.facts[start..end]
    }
}

/// Depth-first search with backtracking over the candidates of the first
/// specs of a set.
///
/// The specs are first split into independent components: two specs are in
/// the same component when they share a variable or a candidate fact.
/// Components are solved one after the other, so a failure in one never
/// makes the search revisit the choices of another.
pub(super) struct Search<'a> {
    specs: &'a SpecSet,
    facts: &'a Facts,
    candidates: &'a Candidates,
    /// The specs in the order they are tried: component by component, fewest
    /// candidates first within a component, interchangeable specs together.
    slots: Vec<Slot>,
    /// For each spec index, the fact chosen (`usize::MAX`: none).
    assigned: Vec<usize>,
    pub(super) bindings: Vec<Option<&'a str>>,
    /// Variables bound, in order, to undo them.
    trail: Vec<usize>,
    /// Bit set of the facts taken.
    used: Vec<u64>,
    pub(super) steps: usize,
    limit: usize,
}

/// One spec's place in the search.
#[derive(Debug, Clone, Copy)]
struct Slot {
    spec: usize,
    /// The component's first spec.
    component: usize,
    /// Where the component ends in `slots`.
    end: usize,
    /// Whether the previous slot holds an interchangeable spec.
    follows_twin: bool,
    /// Interchangeable specs, this one included, from this slot on.
    remaining: usize,
    /// Next candidate position to try.
    next: usize,
    /// Candidate position chosen.
    chosen: usize,
    /// Trail length before this slot's bindings.
    mark: usize,
}

impl<'a> Search<'a> {
    /// A search over specs `0..count`.
    pub(super) fn new(
        specs: &'a SpecSet,
        facts: &'a Facts,
        candidates: &'a Candidates,
        count: usize,
        limit: usize,
    ) -> Self {
        // Union-find over specs, linked through variables and facts.
        let mut scratch = vec![usize::MAX; count + specs.vars.len() + facts.len()];
        let (parent, owners) = scratch.split_at_mut(count);
        let (var_owner, fact_owner) = owners.split_at_mut(specs.vars.len());
        for (s, p) in parent.iter_mut().enumerate() {
            *p = s;
        }
        for s in 0..count {
            for p in &specs.specs[s].fields {
                if let Pattern::Var { id, .. } = p {
                    link(parent, &mut var_owner[*id], s);
                }
            }
            for &f in candidates.of(s) {
                link(parent, &mut fact_owner[f], s);
            }
        }
        let mut slots: Vec<Slot> = (0..count)
            .map(|spec| Slot {
                spec,
                component: find(parent, spec),
                end: count,
                follows_twin: false,
                remaining: 1,
                next: 0,
                chosen: 0,
                mark: 0,
            })
            .collect();
        let group = |s: &Slot| specs.specs[s.spec].group;
        slots
            .sort_unstable_by_key(|s| (s.component, candidates.of(s.spec).len(), group(s), s.spec));
        for p in (0..count.saturating_sub(1)).rev() {
            let (here, after) = (slots[p], slots[p + 1]);
            if here.component == after.component {
                slots[p].end = after.end;
                if group(&here) == group(&after) {
                    slots[p + 1].follows_twin = true;
                    slots[p].remaining = after.remaining + 1;
                }
            } else {
                slots[p].end = p + 1;
            }
        }
        Search {
            specs,
            facts,
            candidates,
            slots,
            assigned: vec![usize::MAX; specs.len()],
            bindings: vec![None; specs.vars.len()],
            trail: Vec::with_capacity(specs.vars.len()),
            used: vec![0; facts.len().div_ceil(64)],
            steps: 0,
            limit,
        }
    }

    /// Finds a solution; on success `assigned` and `bindings` hold it.
    pub(super) fn run(&mut self) -> Result<bool, MatchError> {
        let mut start = 0;
        while start < self.slots.len() {
            let end = self.slots[start].end;
            if !self.run_component(start, end)? {
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }

    /// Solves the specs of `slots[start..end]`.
    fn run_component(&mut self, start: usize, end: usize) -> Result<bool, MatchError> {
        let all: &'a Candidates = self.candidates;
        let mut depth = start;
        self.slots[depth].next = 0;
        loop {
            let slot = self.slots[depth];
            let candidates = all.of(slot.spec);
            // Interchangeable specs take increasing candidate positions, so
            // this one leaves room for those after it.
            let last = (candidates.len() + 1).saturating_sub(slot.remaining);
            let mut found = None;
            for (pos, &fact) in candidates[..last].iter().enumerate().skip(slot.next) {
                if self.steps >= self.limit {
                    return Err(MatchError::SearchLimit { steps: self.steps });
                }
                self.steps += 1;
                if self.is_used(fact) {
                    continue;
                }
                let mark = self.trail.len();
                if self.bind(slot.spec, fact) {
                    found = Some((pos, fact, mark));
                    break;
                }
                self.undo(mark);
            }
            match found {
                Some((pos, fact, mark)) => {
                    let slot = &mut self.slots[depth];
                    slot.next = pos + 1;
                    slot.chosen = pos;
                    slot.mark = mark;
                    self.assigned[slot.spec] = fact;
                    self.set_used(fact, true);
                    depth += 1;
                    if depth == end {
                        return Ok(true);
                    }
                    self.slots[depth].next = if self.slots[depth].follows_twin {
                        pos + 1
                    } else {
                        0
                    };
                }
                None => {
                    if depth == start {
                        return Ok(false);
                    }
                    depth -= 1;
                    let slot = self.slots[depth];
                    self.set_used(self.assigned[slot.spec], false);
                    self.assigned[slot.spec] = usize::MAX;
                    self.undo(slot.mark);
                }
            }
        }
    }

    /// Binds the variables of `spec` to the fields of `fact`; false when a
    /// variable is already bound to something else.
    fn bind(&mut self, spec: usize, fact: usize) -> bool {
        let specs: &'a SpecSet = self.specs;
        let facts: &'a Facts = self.facts;
        let fact = &facts.facts[fact];
        for (i, p) in specs.specs[spec].fields.iter().enumerate() {
            if let Pattern::Var { id, .. } = p {
                let text = fact.field(i);
                match self.bindings[*id] {
                    Some(bound) if bound != text => return false,
                    Some(_) => {}
                    None => {
                        self.bindings[*id] = Some(text);
                        self.trail.push(*id);
                    }
                }
            }
        }
        true
    }

    fn undo(&mut self, mark: usize) {
        for id in self.trail.drain(mark..) {
            self.bindings[id] = None;
        }
    }

    fn is_used(&self, fact: usize) -> bool {
        self.used[fact / 64] & (1 << (fact % 64)) != 0
    }

    fn set_used(&mut self, fact: usize, used: bool) {
        if used {
            self.used[fact / 64] |= 1 << (fact % 64);
        } else {
            self.used[fact / 64] &= !(1 << (fact % 64));
        }
    }

    pub(super) fn to_match(&self) -> Match {
        Match {
            bindings: self
                .bindings
                .iter()
                .enumerate()
                .filter_map(|(id, b)| Some((self.specs.vars[id].clone(), (*b)?.to_owned())))
                .collect(),
            cmdb_keys: self.specs.cmdb_keys.clone(),
            facts: self.assigned.clone(),
        }
    }

    /// The spec holding `fact` in the solution found.
    pub(super) fn owner(&self, fact: usize) -> Option<usize> {
        self.assigned.iter().position(|&f| f == fact)
    }
}

/// Union-find: the representative of `x` (the smallest spec index).
fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Links spec `s` with the first spec seen at `owner`, or records it there.
fn link(parent: &mut [usize], owner: &mut usize, s: usize) {
    if *owner == usize::MAX {
        *owner = s;
        return;
    }
    let (a, b) = (find(parent, *owner), find(parent, s));
    parent[a.max(b)] = a.min(b);
}
