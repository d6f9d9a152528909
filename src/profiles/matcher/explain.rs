//! Why a profile does not match: the spec no fact satisfies alone, or the
//! specs that cannot be satisfied together, with the closest facts.

use super::*;

/// Why a spec set does not match an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Index (from 0) of the spec that could not be satisfied.
    pub spec: usize,
    /// That spec, as written.
    pub pattern: [String; 4],
    /// True when no fact satisfies the spec even on its own; false when facts
    /// do, but none is left once the specs before it are matched (taken by
    /// them, or disagreeing with a variable they captured).
    pub alone: bool,
    /// Indices of the facts the message shows: the closest facts when
    /// `alone`, else the facts that satisfy the spec on its own.
    pub facts: Vec<usize>,
    /// The explanation as a sentence.
    pub message: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Explains why `specs` do not match `facts`; `Ok(None)` when they match.
///
/// The spec named is the first one, in the order written, that no fact
/// satisfies on its own; if every spec has such facts, it is the first spec
/// that cannot be satisfied together with all the specs before it.
pub fn explain(
    specs: &SpecSet,
    facts: &Facts,
    limit: usize,
) -> Result<Option<Explanation>, MatchError> {
    let candidates = Candidates::collect(specs, facts);
    if let Some(s) = (0..specs.len()).find(|&s| candidates.of(s).is_empty()) {
        return Ok(Some(explain_alone(specs, facts, s)));
    }
    let solvable = |n: usize| Search::new(specs, facts, &candidates, n, limit).run();
    if solvable(specs.len())? {
        return Ok(None);
    }
    // Every spec alone is satisfiable, so the first prefix that fails is at
    // least two specs long. Binary search for the shortest failing prefix.
    let (mut lo, mut hi) = (2, specs.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if solvable(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let failing = hi - 1;
    let mut before = Search::new(specs, facts, &candidates, failing, limit);
    before.run()?;
    Ok(Some(explain_together(
        specs,
        facts,
        &candidates,
        failing,
        &before,
    )))
}

fn explain_alone(specs: &SpecSet, facts: &Facts, s: usize) -> Explanation {
    let spec = &specs.specs[s];
    // Closeness: how many fields with a literal or a test the fact passes.
    let scored = (0..facts.len()).map(|f| {
        let score = (0..4)
            .filter(|&i| !matches!(spec.fields[i], Pattern::Var { test: None, .. }))
            .filter(|&i| spec.field_accepts(facts, f, i))
            .count();
        (f, score)
    });
    let best = scored.clone().map(|(_, score)| score).max().unwrap_or(0);
    let closest: Vec<usize> = if best == 0 {
        Vec::new()
    } else {
        scored
            .filter(|&(_, score)| score == best)
            .map(|(f, _)| f)
            .collect()
    };
    let mut message = format!("no fact satisfies {}", render_spec(&specs.source[s]));
    if closest.is_empty() {
        message.push_str("; nothing similar in the inventory");
    }
    for &f in closest.iter().take(SHOWN_FACTS) {
        message.push_str("; ");
        message.push_str(&describe_fact(spec, facts, f));
    }
    if closest.len() > SHOWN_FACTS {
        message.push_str(&format!(
            "; and {} more similar facts",
            closest.len() - SHOWN_FACTS
        ));
    }
    Explanation {
        spec: s,
        pattern: specs.source[s].clone(),
        alone: true,
        facts: closest.into_iter().take(SHOWN_FACTS).collect(),
        message,
    }
}

fn explain_together(
    specs: &SpecSet,
    facts: &Facts,
    candidates: &Candidates,
    s: usize,
    before: &Search<'_>,
) -> Explanation {
    let spec = &specs.specs[s];
    let mut message = format!("no fact satisfies {}", render_spec(&specs.source[s]));
    message.push_str(&if s == 1 {
        " once spec 1 is matched".to_owned()
    } else {
        format!(" once specs 1 to {s} are matched")
    });
    let mut captured: Vec<String> = Vec::new();
    for p in &spec.fields {
        if let Pattern::Var { id, .. } = p
            && let Some(text) = before.bindings[*id]
        {
            let shown = format!("${}='{text}'", specs.vars[*id]);
            if !captured.contains(&shown) {
                captured.push(shown);
            }
        }
    }
    if !captured.is_empty() {
        message.push_str(&format!(" (with {})", captured.join(", ")));
    }
    message.push_str("; facts that satisfy it alone: ");
    let alone = candidates.of(s);
    let shown: Vec<String> = alone
        .iter()
        .take(SHOWN_FACTS)
        .map(|&f| {
            let reason = match before.owner(f) {
                Some(owner) => format!("taken by spec {}", owner + 1),
                None => conflict(specs, spec, facts, f, before),
            };
            format!("{} ({reason})", describe_fact(spec, facts, f))
        })
        .collect();
    message.push_str(&shown.join("; "));
    if alone.len() > SHOWN_FACTS {
        message.push_str(&format!("; and {} more", alone.len() - SHOWN_FACTS));
    }
    Explanation {
        spec: s,
        pattern: specs.source[s].clone(),
        alone: false,
        facts: alone.iter().copied().take(SHOWN_FACTS).collect(),
        message,
    }
}

/// Which captured variable fact `f` disagrees with.
fn conflict(specs: &SpecSet, spec: &Spec, facts: &Facts, f: usize, before: &Search<'_>) -> String {
    let fact = &facts.facts[f];
    let mut local: Vec<(usize, &str)> = Vec::new();
    for (i, p) in spec.fields.iter().enumerate() {
        if let Pattern::Var { id, .. } = p {
            let text = fact.field(i);
            let bound = before.bindings[*id]
                .or_else(|| local.iter().find(|(v, _)| v == id).map(|(_, t)| *t));
            match bound {
                Some(b) if b != text => {
                    return format!("${} is '{b}'", specs.vars[*id]);
                }
                Some(_) => {}
                None => local.push((*id, text)),
            }
        }
    }
    "conflicts with the specs before it".to_owned()
}

/// `('memory','total','size','ge(64GiB)')`
fn render_spec(spec: &[String; 4]) -> String {
    format!("('{}','{}','{}','{}')", spec[0], spec[1], spec[2], spec[3])
}

/// `memory total size is 32 GiB`: the value shown as a size when the spec
/// tests it against a size.
fn describe_fact(spec: &Spec, facts: &Facts, f: usize) -> String {
    let fact = &facts.facts[f];
    let size = spec.fields[3].test().and_then(|t| t.size);
    let value = match (size, facts.number(f, 3)) {
        (Some(family), Some(n)) => human_size(n, family),
        _ => fact.value.clone(),
    };
    format!("{} {} {} is {value}", fact.class, fact.kind, fact.key)
}
