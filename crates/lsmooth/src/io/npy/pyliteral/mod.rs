//! The Python literals of a `.npy` header, parsed as `numpy.load` parses them: with `ast.literal_eval`.
//!
//! numpy reads the header as a Python expression and evaluates it with `ast.literal_eval`, so a header is valid
//! exactly when that call succeeds. This module accepts the same language: Python's tokenizer rules for
//! whitespace, comments, line joining and indentation; string and bytes literals with every prefix, quote style,
//! escape and implicit concatenation; int, float and complex literals with Python's underscore and leading-zero
//! rules; `True`, `False`, `None`, `...`; tuples, lists, sets, `set()` and dicts, with `literal_eval`'s rules
//! for unary signs (on numbers only) and `real ± imaginary` sums; unhashable dict keys or set members refused.
//! For format versions 1.0 and 2.0 numpy retries a header that does not parse after a round trip through Python's
//! `tokenize` (dropping a name `L` that follows a number, Python 2's long integers, and with it the first line's
//! indentation); [`parse`] does the same when asked.
//!
//! One deliberate gap: a `\N{...}` escape is understood by the character's Unicode name only for the printable
//! ASCII characters (the only ones a valid key or dtype can contain); any other name makes the header invalid here,
//! where Python would decode it into a string that no valid header can use anyway, or an alias of an ASCII
//! character, which no writer emits.

/// A Python literal value. Numbers other than integers are kept only as their kind: no header needs their value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `str` (code points that are not Unicode scalar values, from `\ud800`-style escapes, become U+FFFD).
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `int`, exactly, when it fits in an i128; larger ones are [`Value::BigInt`].
    Int(i128),
    /// An `int` too large for an i128 (its sign only).
    BigInt {
        /// Whether it is negative.
        negative: bool,
    },
    /// `bool`.
    Bool(bool),
    /// `float`.
    Float,
    /// `complex`.
    Complex,
    /// `None`.
    None,
    /// `...`.
    Ellipsis,
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `list`.
    List(Vec<Value>),
    /// `set`.
    Set(Vec<Value>),
    /// `dict`, its entries in source order (duplicates included; the last one wins, as in Python).
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// Python's name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Int(_) | Value::BigInt { .. } => "int",
            Value::Bool(_) => "bool",
            Value::Float => "float",
            Value::Complex => "complex",
            Value::None => "NoneType",
            Value::Ellipsis => "ellipsis",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Dict(_) => "dict",
        }
    }

    fn hashable(&self) -> bool {
        match self {
            Value::List(_) | Value::Set(_) | Value::Dict(_) => false,
            Value::Tuple(items) => items.iter().all(Value::hashable),
            _ => true,
        }
    }
}

/// Why a header is not a Python literal: what, and the character offset in the header text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Character offset (0-based) in the decoded header.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

mod lex;
mod parse;

use lex::{Lexer, Tok};
use parse::Parser;

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        offset,
        message: message.into(),
    })
}

/// Drops a name `L` that directly follows a number token (numpy's `_filter_header`, for versions 1.0 and 2.0).
fn drop_long_suffixes(toks: Vec<(Tok, usize)>) -> Vec<(Tok, usize)> {
    let mut out: Vec<(Tok, usize)> = Vec::with_capacity(toks.len());
    let mut last_number = false;
    for (t, at) in toks {
        if last_number && t == Tok::Name("L".into()) {
            last_number = false;
            continue;
        }
        last_number = matches!(t, Tok::Int(_) | Tok::Float | Tok::Imag);
        out.push((t, at));
    }
    out
}

fn parse_tokens(toks: Vec<(Tok, usize)>) -> Result<Value, SyntaxError> {
    let mut p = Parser::new(toks);
    // Leading line breaks (blank lines) were skipped by the lexer; a top-level expression, then only breaks.
    if let Tok::End = p.peek() {
        return err(p.at(), "the header is empty");
    }
    let first = p.expr()?;
    let value = if *p.peek() == Tok::Op(',') {
        // A bare tuple at the top level.
        let mut items = vec![first];
        while *p.peek() == Tok::Op(',') {
            p.bump();
            if matches!(p.peek(), Tok::Op('\n') | Tok::End) {
                break;
            }
            items.push(p.expr()?);
        }
        Value::Tuple(items)
    } else {
        first
    };
    while *p.peek() == Tok::Op('\n') {
        p.bump();
    }
    if *p.peek() != Tok::End {
        return p.unexpected();
    }
    Ok(value)
}

/// Whether the first line holding code, when it is not the first line, starts with any space, tab or form feed.
fn first_code_line_indented(s: &[char]) -> bool {
    let mut lines = s.split(|&c| c == '\n' || c == '\r');
    let Some(first) = lines.next() else { return false };
    let blank = |l: &[char]| {
        let t: Vec<char> = l
            .iter()
            .copied()
            .skip_while(|c| matches!(c, ' ' | '\t' | '\x0c'))
            .collect();
        t.is_empty() || t[0] == '#'
    };
    if !blank(first) {
        return false;
    }
    lines
        .find(|l| !blank(l))
        .is_some_and(|l| matches!(l.first(), Some(' ' | '\t' | '\x0c')))
}

/// Parses `text` as `ast.literal_eval` does (which first strips leading spaces and tabs); with `python2` (format
/// versions 1.0 and 2.0), retries a header that does not parse as numpy does: through Python's tokenizer, which
/// drops `L` suffixes and the first line's indentation.
pub fn parse(text: &str, python2: bool) -> Result<Value, SyntaxError> {
    if let Some(at) = text.chars().position(|c| c == '\0') {
        // Python refuses source code with a NUL anywhere, comments included.
        return err(at, "the header contains a NUL character");
    }
    let chars: Vec<char> = text.chars().collect();
    let skip = chars.iter().take_while(|&&c| c == ' ' || c == '\t').count();
    let lex = Lexer::new(&chars[skip..]);
    let shift = |mut e: SyntaxError| {
        e.offset += skip;
        e
    };
    let first = lex.run().and_then(parse_tokens);
    match first {
        Ok(v) => Ok(v),
        Err(e) if python2 => {
            // numpy's retry: Python's `tokenize` and `untokenize` turn the first line's indentation (spaces, tabs,
            // form feeds) into spaces, which `literal_eval` then strips, and the `L` after a number is dropped.
            // The indentation of a later first code line stays (as spaces): any at all is an error there.
            let indent = chars[skip..]
                .iter()
                .take_while(|&&c| matches!(c, ' ' | '\t' | '\x0c'))
                .count();
            if first_code_line_indented(&chars[skip + indent..]) {
                return Err(shift(e));
            }
            let retry = Lexer::new(&chars[skip + indent..]);
            retry
                .run()
                .and_then(|toks| parse_tokens(drop_long_suffixes(toks)))
                .map_err(|_| shift(e))
        }
        Err(e) => Err(shift(e)),
    }
}

#[cfg(test)]
mod tests;
