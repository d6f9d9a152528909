//! Compiled specs: each field a pattern (literal, variable, test), the
//! spec set with its variables and the groups of specs that share them.

use super::*;

/// A test on one field, as compiled from a function.
#[derive(Debug, Clone)]
pub(super) enum Expr {
    Equal(String),
    Compare(Comparison, Num, Option<UnitFamily>),
    Range(Num, Num, Option<UnitFamily>),
    In(Vec<String>),
    Regexp(Regex),
    Network(Network),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Expr {
    /// `num` is the field read as a number, when the test needs one and the
    /// field holds one.
    fn eval(&self, text: &str, num: Option<Num>) -> bool {
        match self {
            Expr::Equal(s) => text == s,
            Expr::Compare(op, n, _) => num.is_some_and(|v| match op {
                Comparison::Gt => v > *n,
                Comparison::Ge => v >= *n,
                Comparison::Lt => v < *n,
                Comparison::Le => v <= *n,
            }),
            Expr::Range(lo, hi, _) => num.is_some_and(|v| *lo <= v && v <= *hi),
            Expr::In(list) => list.iter().any(|s| s == text),
            Expr::Regexp(re) => re.is_match(text),
            Expr::Network(net) => net.contains(text),
            Expr::Not(e) => !e.eval(text, num),
            Expr::And(es) => es.iter().all(|e| e.eval(text, num)),
            Expr::Or(es) => es.iter().any(|e| e.eval(text, num)),
        }
    }

    fn is_numeric(&self) -> bool {
        match self {
            Expr::Compare(..) | Expr::Range(..) => true,
            Expr::Not(e) => e.is_numeric(),
            Expr::And(es) | Expr::Or(es) => es.iter().any(Expr::is_numeric),
            _ => false,
        }
    }

    /// The unit family of the first size written in the test.
    fn size_family(&self) -> Option<UnitFamily> {
        match self {
            Expr::Compare(_, _, f) | Expr::Range(_, _, f) => *f,
            Expr::Not(e) => e.size_family(),
            Expr::And(es) | Expr::Or(es) => es.iter().find_map(Expr::size_family),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Test {
    expr: Expr,
    numeric: bool,
    pub(super) size: Option<UnitFamily>,
}

impl Test {
    fn new(expr: Expr) -> Self {
        Test {
            numeric: expr.is_numeric(),
            size: expr.size_family(),
            expr,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Pattern {
    Literal(String),
    Var { id: usize, test: Option<Test> },
    Test(Test),
}

impl Pattern {
    pub(super) fn test(&self) -> Option<&Test> {
        match self {
            Pattern::Test(t) | Pattern::Var { test: Some(t), .. } => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub(super) fields: [Pattern; 4],
    class_hash: Option<u32>,
    key_hash: Option<u32>,
    /// Specs with the same group are interchangeable: equal up to the names
    /// of variables that no other spec uses.
    pub(super) group: usize,
}

impl Spec {
    /// Whether field `i` of fact `f` passes this spec's literal or test for
    /// that field, variables aside. A plain variable accepts anything.
    pub(super) fn field_accepts(&self, facts: &Facts, f: usize, i: usize) -> bool {
        let text = facts.facts[f].field(i);
        match &self.fields[i] {
            Pattern::Literal(s) => text == s,
            Pattern::Var { test: None, .. } => true,
            Pattern::Test(t) | Pattern::Var { test: Some(t), .. } => {
                let num = if t.numeric { facts.number(f, i) } else { None };
                t.expr.eval(text, num)
            }
        }
    }

    /// Whether fact `f` satisfies this spec on its own, variables aside.
    pub(super) fn accepts(&self, facts: &Facts, f: usize) -> bool {
        let fact = &facts.facts[f];
        let literals_ok = self.fields.iter().enumerate().all(|(i, p)| match p {
            Pattern::Literal(s) => fact.field(i) == s,
            _ => true,
        });
        literals_ok
            && (0..4).all(|i| {
                matches!(self.fields[i], Pattern::Literal(_)) || self.field_accepts(facts, f, i)
            })
    }

    /// Appends to `out` the facts that satisfy this spec on its own, in
    /// inventory order.
    pub(super) fn collect_candidates(&self, facts: &Facts, out: &mut Vec<usize>) {
        match (self.class_hash, self.key_hash) {
            (Some(class), Some(key)) => out.extend(
                facts
                    .with_class_key(class, key)
                    .iter()
                    .map(|&e| entry_fact(e))
                    .filter(|&f| self.accepts(facts, f)),
            ),
            (Some(class), None) => {
                let start = out.len();
                out.extend(
                    facts
                        .with_class(class)
                        .iter()
                        .map(|&e| entry_fact(e))
                        .filter(|&f| self.accepts(facts, f)),
                );
                out[start..].sort_unstable();
            }
            _ => out.extend((0..facts.len()).filter(|&f| self.accepts(facts, f))),
        }
    }
}

/// The compiled specs of one profile. Parse once, match against any number
/// of inventories.
#[derive(Debug, Clone)]
pub struct SpecSet {
    pub(super) source: Vec<[String; 4]>,
    pub(super) specs: Vec<Spec>,
    /// Variable names, by id, in order of first appearance.
    pub(super) vars: Vec<String>,
    pub(super) cmdb_keys: BTreeSet<String>,
}

impl SpecSet {
    /// Compiles specs: parses every field, compiles regular expressions and
    /// networks, and checks function names and arguments.
    pub fn parse<S: AsRef<str>>(specs: &[[S; 4]]) -> Result<Self, SpecError> {
        let mut vars: Vec<String> = Vec::new();
        let mut cmdb_keys = BTreeSet::new();
        let mut compiled = Vec::with_capacity(specs.len());
        let mut source = Vec::with_capacity(specs.len());
        for (si, spec) in specs.iter().enumerate() {
            let mut field = |fi: usize| -> Result<Pattern, SpecError> {
                let text = spec[fi].as_ref();
                let parsed = parse_field(text).map_err(|(pos, kind)| SpecError {
                    spec: si,
                    field: fi,
                    column: text[..pos.min(text.len())].chars().count() + 1,
                    text: text.to_owned(),
                    kind,
                })?;
                Ok(match parsed {
                    Parsed::Literal => Pattern::Literal(text.to_owned()),
                    Parsed::Test(e) => Pattern::Test(Test::new(e)),
                    Parsed::Var { name, cmdb, test } => {
                        let id = match vars.iter().position(|v| v == name) {
                            Some(id) => id,
                            None => {
                                vars.push(name.to_owned());
                                vars.len() - 1
                            }
                        };
                        if cmdb {
                            cmdb_keys.insert(name.to_owned());
                        }
                        Pattern::Var {
                            id,
                            test: test.map(Test::new),
                        }
                    }
                })
            };
            let fields = [field(0)?, field(1)?, field(2)?, field(3)?];
            let hash_of = |p: &Pattern| match p {
                Pattern::Literal(s) => Some(text_hash(s)),
                _ => None,
            };
            compiled.push(Spec {
                class_hash: hash_of(&fields[0]),
                key_hash: hash_of(&fields[2]),
                fields,
                group: 0,
            });
            source.push([0, 1, 2, 3].map(|i| spec[i].as_ref().to_owned()));
        }
        assign_groups(&mut compiled, &source, vars.len());
        Ok(SpecSet {
            source,
            specs: compiled,
            vars,
            cmdb_keys,
        })
    }

    /// Number of specs.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The specs as written.
    pub fn source(&self) -> &[[String; 4]] {
        &self.source
    }

    /// Names of all variables, in order of first appearance.
    pub fn variables(&self) -> &[String] {
        &self.vars
    }

    /// Names of the variables written at least once as `$$name`.
    pub fn cmdb_keys(&self) -> &BTreeSet<String> {
        &self.cmdb_keys
    }
}

/// Puts interchangeable specs in the same group: specs equal field by field
/// once the variables that appear in no other spec are renamed by order of
/// appearance. Any solution can swap the facts of two such specs, so the
/// search only tries their facts in increasing order.
fn assign_groups(specs: &mut [Spec], source: &[[String; 4]], var_count: usize) {
    let mut spec_count = vec![0usize; var_count];
    for spec in specs.iter() {
        let mut seen: Vec<usize> = Vec::new();
        for p in &spec.fields {
            if let Pattern::Var { id, .. } = p
                && !seen.contains(id)
            {
                seen.push(*id);
                spec_count[*id] += 1;
            }
        }
    }
    let mut groups: HashMap<String, usize> = HashMap::new();
    for (si, spec) in specs.iter_mut().enumerate() {
        let mut key = String::new();
        let mut private: Vec<usize> = Vec::new();
        for (fi, p) in spec.fields.iter().enumerate() {
            let text = &source[si][fi];
            let piece = match p {
                Pattern::Literal(_) => format!("L{text}"),
                Pattern::Test(_) => format!("T{text}"),
                Pattern::Var { id, test } => {
                    let name = if spec_count[*id] > 1 {
                        format!("V{id}")
                    } else {
                        let n = private.iter().position(|v| v == id).unwrap_or_else(|| {
                            private.push(*id);
                            private.len() - 1
                        });
                        format!("P{n}")
                    };
                    match (test, text.split_once('=')) {
                        (Some(_), Some((_, t))) => format!("{name}={t}"),
                        _ => name,
                    }
                }
            };
            key.push_str(&format!("{}:{piece}", piece.len()));
        }
        let next = groups.len();
        spec.group = *groups.entry(key).or_insert(next);
    }
}
