//! The spec language's parser: fields, functions and their arguments, with
//! the position of every error.

use super::*;

/// A spec that could not be compiled: which spec, which field, where, why.
///
/// `spec` and `field` count from 0; the message counts specs from 1, and
/// `column` (a character position) counts from 1 as editors do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec {} field \"{}\": {kind} at column {column} in {text:?}",
    .spec + 1,
    FIELD_NAMES[*.field % 4]
)]
pub struct SpecError {
    pub spec: usize,
    pub field: usize,
    pub column: usize,
    pub text: String,
    pub kind: SpecErrorKind,
}

/// What is wrong in a spec field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecErrorKind {
    #[error("unclosed '('")]
    UnclosedParen,
    #[error("unclosed quote")]
    UnclosedQuote,
    #[error("unexpected {0:?}")]
    Unexpected(char),
    #[error("empty argument")]
    EmptyArgument,
    #[error(
        "unknown function '{0}' (known: gt, ge, lt, le, range, in, regexp, network, not, and, or)"
    )]
    UnknownFunction(String),
    #[error("{function}() takes {expected} but got {found}")]
    Arity {
        function: String,
        expected: &'static str,
        found: usize,
    },
    #[error("bad number '{0}' (expected e.g. 42, 1.5, 64GiB, 100GB)")]
    BadNumber(String),
    #[error("range lower bound is greater than its upper bound")]
    BadRange,
    #[error("bad regular expression: {0}")]
    BadRegex(String),
    #[error("unknown regexp flag '{0}' (the only flag is i, to ignore case)")]
    BadRegexFlag(String),
    #[error("bad network '{0}' (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")]
    BadNetwork(String),
    #[error("expected a variable name (letters, digits, _) after '$'")]
    BadVariable,
    #[error("expected a function after '='")]
    ExpectedFunction,
    #[error("functions nested more than {MAX_NESTING} deep")]
    TooDeep,
}

/// A parse failure: byte position in the field, and what is wrong.
type ParseResult<T> = Result<T, (usize, SpecErrorKind)>;

pub(super) enum Parsed<'a> {
    Literal,
    Var {
        name: &'a str,
        cmdb: bool,
        test: Option<Expr>,
    },
    Test(Expr),
}

pub(super) fn parse_field(text: &str) -> ParseResult<Parsed<'_>> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    if p.eat('$') {
        let cmdb = p.eat('$');
        let len = p.word_len();
        if len == 0 {
            return Err((p.pos, SpecErrorKind::BadVariable));
        }
        let name = &text[p.pos..p.pos + len];
        p.pos += len;
        let test = if p.eat('=') {
            if !p.at_call() {
                return Err((p.pos, SpecErrorKind::ExpectedFunction));
            }
            Some(p.call()?)
        } else {
            None
        };
        p.end()?;
        return Ok(Parsed::Var { name, cmdb, test });
    }
    if p.at_call() {
        let name = &text[..p.word_len()];
        if FUNCTION_NAMES.contains(&name) || text.trim_end().ends_with(')') {
            let expr = p.call()?;
            p.end()?;
            return Ok(Parsed::Test(expr));
        }
    }
    Ok(Parsed::Literal)
}

/// Recursive-descent parser over one field. Positions are byte offsets; the
/// syntax characters are all ASCII, so they never split a UTF-8 character.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Functions open around the cursor.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Fails unless only spaces are left.
    fn end(&mut self) -> ParseResult<()> {
        self.skip_spaces();
        match self.peek() {
            None => Ok(()),
            Some(c) => Err((self.pos, SpecErrorKind::Unexpected(c))),
        }
    }

    /// Length of the run of ASCII letters, digits and `_` at the cursor.
    fn word_len(&self) -> usize {
        self.rest()
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count()
    }

    /// Whether a name directly followed by `(` starts at the cursor.
    fn at_call(&self) -> bool {
        let len = self.word_len();
        let rest = self.rest();
        len > 0 && !rest.as_bytes()[0].is_ascii_digit() && rest[len..].starts_with('(')
    }

    /// `name(args)`, the cursor on the name.
    fn call(&mut self) -> ParseResult<Expr> {
        if self.depth >= MAX_NESTING {
            return Err((self.pos, SpecErrorKind::TooDeep));
        }
        self.depth += 1;
        let expr = self.call_inner();
        self.depth -= 1;
        expr
    }

    fn call_inner(&mut self) -> ParseResult<Expr> {
        let text: &'a str = self.text;
        let start = self.pos;
        let len = self.word_len();
        let name = &text[start..start + len];
        if !FUNCTION_NAMES.contains(&name) {
            return Err((start, SpecErrorKind::UnknownFunction(name.to_owned())));
        }
        self.pos += len;
        let open = self.pos;
        self.pos += 1;
        let arity = |expected: &'static str, found: usize| {
            (
                start,
                SpecErrorKind::Arity {
                    function: name.to_owned(),
                    expected,
                    found,
                },
            )
        };
        match name {
            "not" | "and" | "or" => {
                let mut args = self.args(open, Self::expr_arg)?;
                match (name, args.len()) {
                    ("not", 1) => Ok(Expr::Not(Box::new(args.remove(0)))),
                    ("not", n) => Err(arity("1 argument", n)),
                    (_, n) if n < 2 => Err(arity("at least 2 arguments", n)),
                    ("and", _) => Ok(Expr::And(args)),
                    _ => Ok(Expr::Or(args)),
                }
            }
            "gt" | "ge" | "lt" | "le" => {
                let args = self.args(open, Self::text_arg)?;
                let [arg] = args.as_slice() else {
                    return Err(arity("1 argument", args.len()));
                };
                let (n, family) = number_arg(arg)?;
                let op = match name {
                    "gt" => Comparison::Gt,
                    "ge" => Comparison::Ge,
                    "lt" => Comparison::Lt,
                    _ => Comparison::Le,
                };
                Ok(Expr::Compare(op, n, family))
            }
            "range" => {
                let args = self.args(open, Self::text_arg)?;
                let [lo, hi] = args.as_slice() else {
                    return Err(arity("2 arguments", args.len()));
                };
                let (lo, lo_family) = number_arg(lo)?;
                let (hi, hi_family) = number_arg(hi)?;
                if lo > hi {
                    return Err((start, SpecErrorKind::BadRange));
                }
                Ok(Expr::Range(lo, hi, lo_family.or(hi_family)))
            }
            "in" => {
                let args = self.args(open, Self::text_arg)?;
                if args.is_empty() {
                    return Err(arity("at least 1 argument", 0));
                }
                Ok(Expr::In(args.into_iter().map(|(s, _)| s).collect()))
            }
            "regexp" => {
                let args = self.args(open, Self::text_arg)?;
                let (pattern, ignore_case) = match args.as_slice() {
                    [pattern] => (pattern, false),
                    [pattern, (flag, _)] if flag == "i" => (pattern, true),
                    [_, (flag, at)] => {
                        return Err((*at, SpecErrorKind::BadRegexFlag(flag.clone())));
                    }
                    _ => return Err(arity("1 or 2 arguments", args.len())),
                };
                RegexBuilder::new(&pattern.0)
                    .case_insensitive(ignore_case)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(Expr::Regexp)
                    .map_err(|e| (pattern.1, SpecErrorKind::BadRegex(regex_error(&e))))
            }
            "network" => {
                let args = self.args(open, Self::text_arg)?;
                let [(cidr, at)] = args.as_slice() else {
                    return Err(arity("1 argument", args.len()));
                };
                Network::parse(cidr)
                    .map(Expr::Network)
                    .ok_or((*at, SpecErrorKind::BadNetwork(cidr.clone())))
            }
            _ => Err((start, SpecErrorKind::UnknownFunction(name.to_owned()))),
        }
    }

    /// Comma-separated arguments up to the `)` closing the `(` at `open`.
    fn args<T>(
        &mut self,
        open: usize,
        mut arg: impl FnMut(&mut Self) -> ParseResult<T>,
    ) -> ParseResult<Vec<T>> {
        let mut out = Vec::new();
        self.skip_spaces();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            self.skip_spaces();
            if self.peek().is_none() {
                return Err((open, SpecErrorKind::UnclosedParen));
            }
            out.push(arg(self)?);
            self.skip_spaces();
            let at = self.pos;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(out);
                }
                None => return Err((open, SpecErrorKind::UnclosedParen)),
                Some(c) => return Err((at, SpecErrorKind::Unexpected(c))),
            }
        }
    }

    /// An argument of `not`, `and`, `or`: a function, or a text to equal.
    fn expr_arg(&mut self) -> ParseResult<Expr> {
        if self.at_call() {
            self.call()
        } else {
            self.text_arg().map(|(s, _)| Expr::Equal(s))
        }
    }

    /// A quoted or bare text argument, with its position.
    fn text_arg(&mut self) -> ParseResult<(String, usize)> {
        let start = self.pos;
        if let Some(quote @ ('\'' | '"')) = self.peek() {
            self.pos += 1;
            let mut out = String::new();
            loop {
                let Some(c) = self.peek() else {
                    return Err((start, SpecErrorKind::UnclosedQuote));
                };
                self.pos += c.len_utf8();
                if c != quote {
                    out.push(c);
                } else if self.eat(quote) {
                    out.push(quote);
                } else {
                    return Ok((out, start));
                }
            }
        }
        let rest = self.rest();
        let mut end = rest.len();
        let mut depth = 0usize;
        for (i, b) in rest.bytes().enumerate() {
            match b {
                b'(' => depth += 1,
                b')' | b',' if depth == 0 => {
                    end = i;
                    break;
                }
                b')' => depth -= 1,
                _ => {}
            }
        }
        self.pos += end;
        self.bare(start)
    }

    fn bare(&self, start: usize) -> ParseResult<(String, usize)> {
        let text = self.text[start..self.pos].trim_end();
        if text.is_empty() {
            return Err((start, SpecErrorKind::EmptyArgument));
        }
        Ok((text.to_owned(), start))
    }
}

fn number_arg((text, at): &(String, usize)) -> ParseResult<(Num, Option<UnitFamily>)> {
    parse_number(text).ok_or_else(|| (*at, SpecErrorKind::BadNumber(text.clone())))
}

/// The one-line reason of a regex error (its message spans several lines).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}
