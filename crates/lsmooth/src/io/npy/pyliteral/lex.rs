//! Python's tokenizer, for the tokens a literal can hold: line structure (indentation, blank and comment lines,
//! continuations, brackets), strings and bytes with their prefixes and escapes, numbers, names and operators.

use super::{err, SyntaxError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Str(String),
    Bytes(Vec<u8>),
    /// An integer literal (None when it does not fit in an i128).
    Int(Option<i128>),
    Float,
    Imag,
    Name(String),
    Op(char),
    Ellipsis,
    End,
}

/// What [`Lexer::indentation`] found.
enum Line {
    /// The end of the header.
    End,
    /// A skipped line: look at the next one.
    Again,
    /// The line's first token.
    Tokens,
}

pub(super) struct Lexer<'a> {
    s: &'a [char],
    i: usize,
    depth: usize,
    /// At the start of a logical line outside brackets (indentation is checked there).
    line_start: bool,
    /// The indentation so far of a logical line continued by a backslash at its start.
    continued_indent: Option<usize>,
    toks: Vec<(Tok, usize)>,
}

fn bad_number<T>(at: usize) -> Result<T, SyntaxError> {
    err(at, "invalid number literal")
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The printable ASCII character of a Unicode name (case-insensitive, as Python's `\N{...}`).
fn ascii_by_name(name: &str) -> Option<char> {
    let n = name.to_ascii_uppercase();
    if let Some(l) = n.strip_prefix("LATIN CAPITAL LETTER ") {
        let c = l.chars().next()?;
        return (l.len() == 1 && c.is_ascii_uppercase()).then_some(c);
    }
    if let Some(l) = n.strip_prefix("LATIN SMALL LETTER ") {
        let c = l.chars().next()?;
        return (l.len() == 1 && c.is_ascii_uppercase()).then(|| c.to_ascii_lowercase());
    }
    const DIGITS: [&str; 10] = [
        "ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE",
    ];
    if let Some(d) = n.strip_prefix("DIGIT ") {
        return DIGITS.iter().position(|&x| x == d).map(|i| (b'0' + i as u8) as char);
    }
    const PUNCT: [(&str, char); 33] = [
        ("SPACE", ' '),
        ("EXCLAMATION MARK", '!'),
        ("QUOTATION MARK", '"'),
        ("NUMBER SIGN", '#'),
        ("DOLLAR SIGN", '$'),
        ("PERCENT SIGN", '%'),
        ("AMPERSAND", '&'),
        ("APOSTROPHE", '\''),
        ("LEFT PARENTHESIS", '('),
        ("RIGHT PARENTHESIS", ')'),
        ("ASTERISK", '*'),
        ("PLUS SIGN", '+'),
        ("COMMA", ','),
        ("HYPHEN-MINUS", '-'),
        ("FULL STOP", '.'),
        ("SOLIDUS", '/'),
        ("COLON", ':'),
        ("SEMICOLON", ';'),
        ("LESS-THAN SIGN", '<'),
        ("EQUALS SIGN", '='),
        ("GREATER-THAN SIGN", '>'),
        ("QUESTION MARK", '?'),
        ("COMMERCIAL AT", '@'),
        ("LEFT SQUARE BRACKET", '['),
        ("REVERSE SOLIDUS", '\\'),
        ("RIGHT SQUARE BRACKET", ']'),
        ("CIRCUMFLEX ACCENT", '^'),
        ("LOW LINE", '_'),
        ("GRAVE ACCENT", '`'),
        ("LEFT CURLY BRACKET", '{'),
        ("VERTICAL LINE", '|'),
        ("RIGHT CURLY BRACKET", '}'),
        ("TILDE", '~'),
    ];
    PUNCT.iter().find(|(p, _)| *p == n).map(|&(_, c)| c)
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `s` (a first line, already stripped of its leading spaces and tabs).
    pub(super) fn new(s: &'a [char]) -> Self {
        Lexer {
            s,
            i: 0,
            depth: 0,
            line_start: true,
            continued_indent: None,
            toks: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    /// Skips a newline at `i` (`\n`, `\r\n` or `\r`); returns whether there was one.
    fn newline(&mut self) -> bool {
        match self.peek(0) {
            Some('\n') => {
                self.i += 1;
                true
            }
            Some('\r') => {
                self.i += if self.peek(1) == Some('\n') { 2 } else { 1 };
                true
            }
            _ => false,
        }
    }

    pub(super) fn run(mut self) -> Result<Vec<(Tok, usize)>, SyntaxError> {
        loop {
            if self.line_start && self.depth == 0 {
                match self.indentation()? {
                    Line::End => break,
                    Line::Again => continue,
                    Line::Tokens => {}
                }
            }
            if !self.token()? {
                break;
            }
        }
        if self.depth > 0 {
            return err(self.i, "the header ends inside a bracket");
        }
        let end = self.i;
        self.toks.push((Tok::End, end));
        Ok(self.toks)
    }

    /// At the start of a logical line (outside brackets): its indentation, which must be none. Blank and
    /// comment-only lines are skipped, and a continuation joins the next line into this one (its whitespace
    /// adds to the indentation).
    fn indentation(&mut self) -> Result<Line, SyntaxError> {
        if self.continued_indent.is_none() {
            self.continued_indent = Some(0);
        }
        let mut col = self.continued_indent.unwrap_or(0);
        while let Some(c) = self.peek(0) {
            match c {
                ' ' => col += 1,
                '\t' => col = (col / 8 + 1) * 8,
                '\x0c' => col = 0,
                _ => break,
            }
            self.i += 1;
        }
        match self.peek(0) {
            None => return Ok(Line::End),
            Some('#') => {
                while !matches!(self.peek(0), None | Some('\n' | '\r')) {
                    self.i += 1;
                }
                self.newline();
                self.continued_indent = None;
                return Ok(Line::Again);
            }
            Some('\n' | '\r') => {
                self.newline();
                self.continued_indent = None;
                return Ok(Line::Again);
            }
            Some('\\') if matches!(self.peek(1), Some('\n' | '\r')) => {
                self.i += 1;
                self.newline();
                if self.peek(0).is_none() {
                    return err(self.i, "end of header inside a continued line");
                }
                self.continued_indent = Some(col);
                return Ok(Line::Again);
            }
            Some(_) if col > 0 => return err(self.i, "unexpected indent"),
            Some(_) => {
                self.line_start = false;
                self.continued_indent = None;
            }
        }
        Ok(Line::Tokens)
    }

    /// One token, or the whitespace, comment or line break before one, from `i`; `false` at the end.
    fn token(&mut self) -> Result<bool, SyntaxError> {
        let start = self.i;
        let Some(c) = self.peek(0) else { return Ok(false) };
        match c {
            ' ' | '\t' | '\x0c' => self.i += 1,
            '#' => {
                while !matches!(self.peek(0), None | Some('\n' | '\r')) {
                    self.i += 1;
                }
            }
            '\n' | '\r' => {
                self.newline();
                if self.depth == 0 {
                    self.line_start = true;
                    self.toks.push((Tok::Op('\n'), start));
                }
            }
            '\\' => {
                self.i += 1;
                if !self.newline() {
                    return err(start, "unexpected character after line continuation character");
                }
                if self.peek(0).is_none() {
                    return err(self.i, "end of header inside a continued line");
                }
            }
            '\0' => return err(start, "the header contains a NUL character"),
            '{' | '(' | '[' => {
                self.depth += 1;
                self.i += 1;
                self.toks.push((Tok::Op(c), start));
            }
            '}' | ')' | ']' => {
                if self.depth == 0 {
                    return err(start, format!("unmatched '{c}'"));
                }
                self.depth -= 1;
                self.i += 1;
                self.toks.push((Tok::Op(c), start));
            }
            ',' | ':' | '+' | '-' => {
                self.i += 1;
                self.toks.push((Tok::Op(c), start));
            }
            '.' if self.peek(1) == Some('.') && self.peek(2) == Some('.') => {
                self.i += 3;
                self.toks.push((Tok::Ellipsis, start));
            }
            '.' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => {
                let t = self.number()?;
                self.toks.push((t, start));
            }
            '0'..='9' => {
                let t = self.number()?;
                self.toks.push((t, start));
            }
            '\'' | '"' => {
                let t = self.string("")?;
                self.toks.push((t, start));
            }
            c if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek(0).filter(|&c| is_name_char(c)) {
                    name.push(c);
                    self.i += 1;
                }
                if matches!(self.peek(0), Some('\'' | '"')) {
                    let t = self.string(&name)?;
                    self.toks.push((t, start));
                } else {
                    self.toks.push((Tok::Name(name), start));
                }
            }
            c => return err(start, format!("invalid character {c:?}")),
        }
        Ok(true)
    }

    /// A numeric literal starting at `i`: its digits, underscores, base prefix, fraction, exponent, `j`.
    fn number(&mut self) -> Result<Tok, SyntaxError> {
        let start = self.i;
        // Digits with single underscores between them, in the given radix.
        let digits = |lx: &mut Self, radix: u32, allow_leading_underscore: bool| -> Result<String, SyntaxError> {
            let mut out = String::new();
            let mut prev_us = !allow_leading_underscore;
            if !allow_leading_underscore && lx.peek(0) == Some('_') {
                return bad_number(lx.i);
            }
            while let Some(c) = lx.peek(0) {
                if c == '_' {
                    if prev_us {
                        return bad_number(lx.i);
                    }
                    prev_us = true;
                } else if c.is_digit(radix) {
                    out.push(c);
                    prev_us = false;
                } else if c.is_ascii_digit() {
                    return bad_number(lx.i);
                } else {
                    break;
                }
                lx.i += 1;
            }
            if prev_us && !out.is_empty() || out.is_empty() {
                return bad_number(lx.i);
            }
            Ok(out)
        };
        let c0 = self.peek(0).unwrap_or(' ');
        let radix = match (c0, self.peek(1).map(|c| c.to_ascii_lowercase())) {
            ('0', Some('x')) => 16,
            ('0', Some('o')) => 8,
            ('0', Some('b')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let d = digits(self, radix, true)?;
            if self
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() && !c.eq_ignore_ascii_case(&'l'))
            {
                return bad_number(self.i);
            }
            return Ok(Tok::Int(i128::from_str_radix(&d, radix).ok()));
        }
        let int_part = if c0 == '.' {
            String::new()
        } else {
            digits(self, 10, false)?
        };
        let mut is_float = false;
        if self.peek(0) == Some('.') {
            is_float = true;
            self.i += 1;
            if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                digits(self, 10, false)?;
            } else if self.peek(0) == Some('_') {
                return bad_number(self.i);
            }
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            self.i += 1;
            if matches!(self.peek(0), Some('+' | '-')) {
                self.i += 1;
            }
            if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                digits(self, 10, false)?;
                is_float = true;
            } else {
                // `1e` or `1e+`: not a number.
                return bad_number(self.i);
            }
        }
        if matches!(self.peek(0), Some('j' | 'J')) {
            self.i += 1;
            return Ok(Tok::Imag);
        }
        if is_float {
            return Ok(Tok::Float);
        }
        // Decimal integers other than zero may not start with 0.
        if int_part.len() > 1 && int_part.starts_with('0') && int_part.chars().any(|c| c != '0') {
            return err(start, "leading zeros in a decimal integer literal are not permitted");
        }
        Ok(Tok::Int(int_part.parse::<i128>().ok()))
    }

    /// A string or bytes literal with the given prefix, the quote at `i`.
    fn string(&mut self, prefix: &str) -> Result<Tok, SyntaxError> {
        let start = self.i - prefix.chars().count();
        let p = prefix.to_ascii_lowercase();
        let (raw, bytes) = match p.as_str() {
            "" | "u" => (false, false),
            "r" => (true, false),
            "b" => (false, true),
            "br" | "rb" => (true, true),
            "f" | "fr" | "rf" => return err(start, "f-strings are not literals"),
            _ => return err(start, format!("invalid string prefix {prefix:?}")),
        };
        let q = self.peek(0).unwrap_or('\'');
        let triple = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        self.i += if triple { 3 } else { 1 };
        let mut out: Vec<u32> = Vec::new();
        loop {
            let Some(c) = self.peek(0) else {
                return err(start, "unterminated string literal");
            };
            if c == q && (!triple || (self.peek(1) == Some(q) && self.peek(2) == Some(q))) {
                self.i += if triple { 3 } else { 1 };
                break;
            }
            if matches!(c, '\n' | '\r') && !triple {
                return err(start, "unterminated string literal");
            }
            if c == '\0' {
                return err(self.i, "the header contains a NUL character");
            }
            if bytes && !c.is_ascii() {
                return err(self.i, "bytes can only contain ASCII literal characters");
            }
            if c == '\r' {
                // Python reads source with universal newlines: `\r\n` and `\r` are `\n` inside strings too.
                self.newline();
                out.push('\n' as u32);
                continue;
            }
            if c != '\\' {
                out.push(c as u32);
                self.i += 1;
                continue;
            }
            // A backslash.
            let Some(e) = self.peek(1) else {
                return err(start, "unterminated string literal");
            };
            if raw {
                // Kept as written; it only stops the next character from ending the string.
                out.push('\\' as u32);
                self.i += 1;
                if matches!(e, '\n' | '\r') {
                    self.newline();
                    out.push('\n' as u32);
                } else {
                    out.push(e as u32);
                    self.i += 1;
                }
                continue;
            }
            self.escape(e, bytes, q, &mut out)?;
        }
        if bytes {
            Ok(Tok::Bytes(out.into_iter().map(|v| v as u8).collect()))
        } else {
            Ok(Tok::Str(
                out.into_iter()
                    .map(|v| char::from_u32(v).unwrap_or('\u{fffd}'))
                    .collect(),
            ))
        }
    }

    /// The escape sequence (backslash, then `e`) at `i` of a string that is not raw, quoted by `q`: its value
    /// pushed to `out` (nothing for a line continuation; the backslash and `e` for an unknown escape).
    fn escape(&mut self, e: char, bytes: bool, q: char, out: &mut Vec<u32>) -> Result<(), SyntaxError> {
        let esc_at = self.i;
        self.i += 2;
        match e {
            '\n' => {}
            '\r' => {
                if self.peek(0) == Some('\n') {
                    self.i += 1;
                }
            }
            '\\' | '\'' | '"' => out.push(e as u32),
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(10),
            'r' => out.push(13),
            't' => out.push(9),
            'v' => out.push(11),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek(0).and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.i += 1;
                        }
                        None => break,
                    }
                }
                if bytes && v > 255 {
                    // Python 3.11 takes the value modulo 256 with a warning.
                    v &= 255;
                }
                out.push(v);
            }
            'x' => out.push(self.hex_escape(2, esc_at)?),
            'u' if !bytes => out.push(self.hex_escape(4, esc_at)?),
            'U' if !bytes => {
                let v = self.hex_escape(8, esc_at)?;
                if v > 0x10ffff {
                    return err(esc_at, "illegal Unicode character");
                }
                out.push(v);
            }
            'N' if !bytes => out.push(self.named_escape(esc_at, q)?),
            other => {
                // An unknown escape keeps its backslash (Python warns, and keeps it).
                if bytes && !other.is_ascii() {
                    return err(self.i - 1, "bytes can only contain ASCII literal characters");
                }
                out.push('\\' as u32);
                out.push(other as u32);
            }
        }
        Ok(())
    }

    /// The character of a `\\N{NAME}` escape (its backslash at `esc_at`, the `{` at `i`): ASCII names only.
    fn named_escape(&mut self, esc_at: usize, q: char) -> Result<u32, SyntaxError> {
        if self.peek(0) != Some('{') {
            return err(esc_at, "malformed \\N character escape");
        }
        let name_start = self.i + 1;
        let mut j = name_start;
        while self.s.get(j).is_some_and(|&c| c != '}' && c != q && c != '\n') {
            j += 1;
        }
        if self.s.get(j) != Some(&'}') || j == name_start {
            return err(esc_at, "malformed \\N character escape");
        }
        let name: String = self.s[name_start..j].iter().collect();
        match ascii_by_name(&name) {
            Some(c) => {
                self.i = j + 1;
                Ok(c as u32)
            }
            None => err(
                esc_at,
                format!("unknown (or non-ASCII) Unicode character name {name:?}"),
            ),
        }
    }

    fn hex_escape(&mut self, n: usize, esc_at: usize) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..n {
            match self.peek(0).and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    v = v * 16 + d;
                    self.i += 1;
                }
                None => {
                    return err(
                        esc_at,
                        format!("truncated \\{}XX escape", if n == 2 { 'x' } else { 'u' }),
                    )
                }
            }
        }
        Ok(v)
    }
}
