//! `ast.literal_eval` over the tokens: atoms, signs, `real ± imaginary`, tuples, lists, sets and dicts.

use super::lex::Tok;
use super::{err, SyntaxError, Value};

/// What kind of number an expression is, for `literal_eval`'s rules on signs and sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// A number literal (int, float or imaginary), possibly in parentheses.
    Plain,
    /// A number literal with one sign.
    Signed,
    /// Anything else.
    No,
}

pub(super) struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser {
    pub(super) fn new(toks: Vec<(Tok, usize)>) -> Self {
        Parser { toks, i: 0 }
    }

    pub(super) fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }

    pub(super) fn at(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }

    pub(super) fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn expect(&mut self, c: char) -> Result<(), SyntaxError> {
        if *self.peek() == Tok::Op(c) {
            self.bump();
            Ok(())
        } else {
            err(self.at(), format!("expected '{c}'"))
        }
    }

    pub(super) fn unexpected<T>(&self) -> Result<T, SyntaxError> {
        let what = match self.peek() {
            Tok::End => "the end of the header".to_string(),
            Tok::Op('\n') => "a line break".to_string(),
            Tok::Op(c) => format!("'{c}'"),
            Tok::Name(n) => format!("the name {n:?}"),
            Tok::Str(_) | Tok::Bytes(_) => "a string".into(),
            Tok::Int(_) | Tok::Float | Tok::Imag => "a number".into(),
            Tok::Ellipsis => "'...'".into(),
        };
        err(self.at(), format!("unexpected {what}"))
    }

    /// A whole expression: a signed atom, then (for `literal_eval`) an optional `± imaginary`.
    pub(super) fn expr(&mut self) -> Result<Value, SyntaxError> {
        Ok(self.expr_kind()?.0)
    }

    fn expr_kind(&mut self) -> Result<(Value, Num), SyntaxError> {
        let start = self.at();
        let (left, left_kind) = self.unary()?;
        if let Tok::Op('+' | '-') = *self.peek() {
            self.bump();
            let (right, right_kind) = self.unary()?;
            // literal_eval: a (signed) int or float, plus or minus an unsigned imaginary literal.
            let ok = left_kind != Num::No
                && matches!(left, Value::Int(_) | Value::BigInt { .. } | Value::Float)
                && right_kind == Num::Plain
                && right == Value::Complex;
            if !ok {
                return err(
                    start,
                    "not a literal: the only sums that are literals are 'real ± imaginary'",
                );
            }
            return Ok((Value::Complex, Num::No));
        }
        Ok((left, left_kind))
    }

    /// An atom with at most one sign, which only a number literal may carry.
    fn unary(&mut self) -> Result<(Value, Num), SyntaxError> {
        if let Tok::Op(sign @ ('+' | '-')) = *self.peek() {
            let at = self.at();
            self.bump();
            let (v, kind) = self.atom()?;
            if kind != Num::Plain {
                return err(at, "not a literal: a sign applies to a number literal only");
            }
            let v = match (sign, v) {
                ('-', Value::Int(n)) => Value::Int(-n),
                ('-', Value::BigInt { negative }) => Value::BigInt { negative: !negative },
                (_, v) => v,
            };
            return Ok((v, Num::Signed));
        }
        self.atom()
    }

    /// An atom, and whether it is a number literal (int, float or imaginary, not bool), possibly parenthesised.
    fn atom(&mut self) -> Result<(Value, Num), SyntaxError> {
        let t = self.bump();
        Ok(match t {
            Tok::Int(Some(n)) => (Value::Int(n), Num::Plain),
            Tok::Int(None) => (Value::BigInt { negative: false }, Num::Plain),
            Tok::Float => (Value::Float, Num::Plain),
            Tok::Imag => (Value::Complex, Num::Plain),
            Tok::Str(mut s) => {
                // Implicit concatenation of adjacent literals of the same kind.
                loop {
                    match self.peek() {
                        Tok::Str(t) => {
                            s.push_str(t);
                            self.bump();
                        }
                        Tok::Bytes(_) => return err(self.at(), "cannot mix bytes and nonbytes literals"),
                        _ => break,
                    }
                }
                (Value::Str(s), Num::No)
            }
            Tok::Bytes(mut b) => {
                loop {
                    match self.peek() {
                        Tok::Bytes(t) => {
                            b.extend_from_slice(t);
                            self.bump();
                        }
                        Tok::Str(_) => return err(self.at(), "cannot mix bytes and nonbytes literals"),
                        _ => break,
                    }
                }
                (Value::Bytes(b), Num::No)
            }
            Tok::Name(n) => match n.as_str() {
                "True" => (Value::Bool(true), Num::No),
                "False" => (Value::Bool(false), Num::No),
                "None" => (Value::None, Num::No),
                "set" if *self.peek() == Tok::Op('(') => {
                    self.bump();
                    self.expect(')')?;
                    (Value::Set(Vec::new()), Num::No)
                }
                _ => {
                    self.i -= 1;
                    return err(self.at(), format!("not a literal: the name {n:?}"));
                }
            },
            Tok::Ellipsis => (Value::Ellipsis, Num::No),
            Tok::Op('(') => return self.parenthesised(),
            Tok::Op('[') => {
                let items = self.items(']')?;
                (Value::List(items), Num::No)
            }
            Tok::Op('{') => return self.braced(),
            _ => {
                self.i -= 1;
                return self.unexpected();
            }
        })
    }

    /// After `(`: the empty tuple, a parenthesised expression (the expression itself) or a tuple.
    fn parenthesised(&mut self) -> Result<(Value, Num), SyntaxError> {
        if *self.peek() == Tok::Op(')') {
            self.bump();
            return Ok((Value::Tuple(Vec::new()), Num::No));
        }
        let first = self.expr_kind()?;
        if *self.peek() == Tok::Op(')') {
            self.bump();
            // A parenthesised expression is the expression itself.
            return Ok(first);
        }
        let mut items = vec![first.0];
        while *self.peek() == Tok::Op(',') {
            self.bump();
            if *self.peek() == Tok::Op(')') {
                break;
            }
            items.push(self.expr()?);
        }
        self.expect(')')?;
        Ok((Value::Tuple(items), Num::No))
    }

    /// After `{`: a dict or a set (the empty dict for `{}`), with every key or member hashable.
    fn braced(&mut self) -> Result<(Value, Num), SyntaxError> {
        if *self.peek() == Tok::Op('}') {
            self.bump();
            return Ok((Value::Dict(Vec::new()), Num::No));
        }
        let first_at = self.at();
        let first = self.expr()?;
        if *self.peek() == Tok::Op(':') {
            self.bump();
            let v = self.expr()?;
            let mut entries = vec![(first, v)];
            let mut key_at = vec![first_at];
            while *self.peek() == Tok::Op(',') {
                self.bump();
                if *self.peek() == Tok::Op('}') {
                    break;
                }
                key_at.push(self.at());
                let k = self.expr()?;
                self.expect(':')?;
                let v = self.expr()?;
                entries.push((k, v));
            }
            self.expect('}')?;
            if let Some(i) = entries.iter().position(|(k, _)| !k.hashable()) {
                return err(
                    key_at[i],
                    format!("unhashable dict key of type {}", entries[i].0.type_name()),
                );
            }
            Ok((Value::Dict(entries), Num::No))
        } else {
            let mut items = vec![first];
            while *self.peek() == Tok::Op(',') {
                self.bump();
                if *self.peek() == Tok::Op('}') {
                    break;
                }
                items.push(self.expr()?);
            }
            self.expect('}')?;
            if let Some(v) = items.iter().find(|v| !v.hashable()) {
                return err(first_at, format!("unhashable set member of type {}", v.type_name()));
            }
            Ok((Value::Set(items), Num::No))
        }
    }

    fn items(&mut self, close: char) -> Result<Vec<Value>, SyntaxError> {
        let mut items = Vec::new();
        if *self.peek() == Tok::Op(close) {
            self.bump();
            return Ok(items);
        }
        items.push(self.expr()?);
        while *self.peek() == Tok::Op(',') {
            self.bump();
            if *self.peek() == Tok::Op(close) {
                break;
            }
            items.push(self.expr()?);
        }
        self.expect(close)?;
        Ok(items)
    }
}
