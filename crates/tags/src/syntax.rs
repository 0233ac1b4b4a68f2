//! The expression DSL: lexer, parser and the untyped AST. Every token and node carries a
//! [`Span`] (byte offsets into the expression text). The grammar is in the crate docs.

use std::fmt;

/// Maximum nesting depth of parentheses, calls and prefix operators.
pub const MAX_DEPTH: usize = 64;

/// A byte range in the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A syntax error: where, what, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where.
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

fn err<T>(span: Span, message: impl Into<String>, hint: Option<&str>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        span,
        message: message.into(),
        hint: hint.map(str::to_string),
    })
}

/// Duration units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
    /// `w`
    Weeks,
}

impl Unit {
    /// Milliseconds in one unit.
    pub fn ms(self) -> i64 {
        match self {
            Unit::Minutes => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days => 86_400_000,
            Unit::Weeks => 7 * 86_400_000,
        }
    }
    /// The unit's letter.
    pub fn letter(self) -> char {
        match self {
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
            Unit::Weeks => 'w',
        }
    }
}

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A word: identifier or keyword (keywords are recognised by the parser, case-insensitive).
    Ident(String),
    /// A backtick-quoted identifier (never a keyword).
    Quoted(String),
    /// A number.
    Num(f64),
    /// A duration such as `7d`: amount and unit.
    Dur(u64, Unit),
    /// A string literal (escapes resolved).
    Str(String),
    /// Punctuation or an operator: `( ) , . = != < <= > >= + - * / %`.
    Sym(&'static str),
    /// End of input.
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Quoted(s) => write!(f, "`{s}`"),
            Tok::Num(n) => write!(f, "number {}", crate::value::format_number(*n)),
            Tok::Dur(n, u) => write!(f, "duration {n}{}", u.letter()),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Sym(s) => write!(f, "`{s}`"),
            Tok::Eof => write!(f, "end of expression"),
        }
    }
}

/// Splits an expression into tokens with spans.
pub fn lex(text: &str) -> Result<Vec<(Tok, Span)>, SyntaxError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if c.is_ascii_digit() {
            while i < text.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < text.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < text.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let num_text = &text[start..i];
            let mut j = i;
            while j < text.len() && is_ident_char(text[j..].chars().next().unwrap_or(' ')) {
                j += text[j..].chars().next().map_or(1, char::len_utf8);
            }
            let suffix = &text[i..j];
            if suffix.is_empty() {
                match num_text.parse::<f64>() {
                    Ok(n) => out.push((Tok::Num(n), Span::new(start, i))),
                    Err(_) => return err(Span::new(start, i), "invalid number", None),
                }
                continue;
            }
            let unit = match suffix {
                "m" => Some(Unit::Minutes),
                "h" => Some(Unit::Hours),
                "d" => Some(Unit::Days),
                "w" => Some(Unit::Weeks),
                _ => None,
            };
            let span = Span::new(start, j);
            match (unit, num_text.parse::<u64>()) {
                (Some(u), Ok(n)) => out.push((Tok::Dur(n, u), span)),
                (Some(_), Err(_)) => {
                    return err(
                        span,
                        format!("bad duration \"{}\"", &text[start..j]),
                        Some("durations are whole numbers of m, h, d or w, e.g. 90m"),
                    )
                }
                (None, _) => {
                    return err(
                        span,
                        format!("bad duration \"{}\"", &text[start..j]),
                        Some("a duration is a number followed by m (minutes), h, d or w, e.g. 7d"),
                    )
                }
            }
            i = j;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < text.len() && is_ident_char(text[i..].chars().next().unwrap_or(' ')) {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
            out.push((Tok::Ident(text[start..i].to_string()), Span::new(start, i)));
            continue;
        }
        if c == '`' {
            match text[i + 1..].find('`') {
                Some(k) if k > 0 => {
                    let name = text[i + 1..i + 1 + k].to_string();
                    i += k + 2;
                    out.push((Tok::Quoted(name), Span::new(start, i)));
                    continue;
                }
                _ => {
                    return err(
                        Span::new(start, text.len()),
                        "unclosed backtick identifier",
                        None,
                    )
                }
            }
        }
        if c == '"' || c == '\'' {
            let (s, end) = lex_string(text, i, c)?;
            out.push((Tok::Str(s), Span::new(start, end)));
            i = end;
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let sym: Option<&'static str> = match two {
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "<>" => Some("<>"),
            "==" => Some("=="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            _ => None,
        };
        if let Some(s) = sym {
            let span = Span::new(i, i + 2);
            match s {
                "<>" => {
                    return err(
                        span,
                        "unknown operator `<>`",
                        Some("write != for inequality"),
                    )
                }
                "==" => return err(span, "unknown operator `==`", Some("write = for equality")),
                "&&" => return err(span, "unknown operator `&&`", Some("write `and`")),
                "||" => return err(span, "unknown operator `||`", Some("write `or`")),
                _ => {}
            }
            out.push((Tok::Sym(s), span));
            i += 2;
            continue;
        }
        let one: Option<&'static str> = match c {
            '(' => Some("("),
            ')' => Some(")"),
            ',' => Some(","),
            '.' => Some("."),
            '=' => Some("="),
            '<' => Some("<"),
            '>' => Some(">"),
            '+' => Some("+"),
            '-' => Some("-"),
            '*' => Some("*"),
            '/' => Some("/"),
            '%' => Some("%"),
            _ => None,
        };
        match one {
            Some(s) => {
                out.push((Tok::Sym(s), Span::new(i, i + 1)));
                i += 1;
            }
            None => {
                let span = Span::new(i, i + c.len_utf8());
                let hint = match c {
                    '“' | '”' | '‘' | '’' => {
                        Some("use straight quotes \" or ' around strings")
                    }
                    '（' | '）' | '，' => {
                        Some("use ASCII ( ) , instead of full-width punctuation")
                    }
                    '!' => Some("write `not` for negation"),
                    _ => None,
                };
                return err(span, format!("unexpected character '{c}'"), hint);
            }
        }
    }
    out.push((Tok::Eof, Span::new(text.len(), text.len())));
    Ok(out)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex_string(text: &str, start: usize, quote: char) -> Result<(String, usize), SyntaxError> {
    let mut out = String::new();
    let mut it = text[start + 1..].char_indices();
    while let Some((k, c)) = it.next() {
        let pos = start + 1 + k;
        if c == quote {
            return Ok((out, pos + 1));
        }
        if c == '\\' {
            match it.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((k2, other)) => {
                    let end = start + 1 + k2 + other.len_utf8();
                    return err(
                        Span::new(pos, end),
                        format!("unknown escape \\{other}"),
                        Some("escapes are \\\" \\' \\\\ \\n \\t"),
                    );
                }
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    err(
        Span::new(start, text.len()),
        "unclosed string",
        Some("add the closing quote"),
    )
}

// ---------------------------------------------------------------------------------------------
// AST

/// An untyped expression node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Where it is.
    pub span: Span,
}

/// Binary arithmetic operators of the AST.
pub use crate::ir::ArithOp;
/// Comparison operators of the AST.
pub use crate::ir::CmpOp;

/// Node kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A number literal.
    Num(f64),
    /// A string literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A dotted path (`traits.skin_type`, `event`, `tag.lifecycle`, a bare tag name).
    Path(Vec<String>),
    /// A function call.
    Call {
        /// Function name as written.
        name: String,
        /// Span of the name.
        name_span: Span,
        /// Arguments.
        args: Vec<Arg>,
    },
    /// `not x`.
    Not(Box<Node>),
    /// `a and b and …`.
    And(Vec<Node>),
    /// `a or b or …`.
    Or(Vec<Node>),
    /// `a OP b` comparison.
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `a OP b` arithmetic.
    Arith(ArithOp, Box<Node>, Box<Node>),
    /// `-x`.
    Neg(Box<Node>),
    /// `x [not] in (lit, …)`.
    In {
        /// Tested value.
        expr: Box<Node>,
        /// Members (literals).
        list: Vec<Node>,
        /// `not in`.
        negated: bool,
    },
    /// `x [not] between a and b`.
    Between {
        /// Tested value.
        expr: Box<Node>,
        /// Lower bound.
        low: Box<Node>,
        /// Upper bound.
        high: Box<Node>,
        /// `not between`.
        negated: bool,
    },
    /// `x is [not] null`.
    IsNull {
        /// Tested value.
        expr: Box<Node>,
        /// `is not null`.
        negated: bool,
    },
}

/// A call argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// An expression.
    Expr(Node),
    /// `within 7d` / `within 7 calendar days`.
    Within {
        /// Amount.
        amount: u64,
        /// Unit (`Days` for the calendar form).
        unit: Unit,
        /// Calendar days.
        calendar: bool,
        /// Span of the whole argument.
        span: Span,
    },
    /// `between 60d and 30d ago`.
    Ago {
        /// The far end (amount, unit).
        from: (u64, Unit),
        /// The near end.
        to: (u64, Unit),
        /// Span of the whole argument.
        span: Span,
        /// Span of the far end (for window-order errors).
        from_span: Span,
    },
}

impl Arg {
    /// The argument's span.
    pub fn span(&self) -> Span {
        match self {
            Arg::Expr(n) => n.span,
            Arg::Within { span, .. } | Arg::Ago { span, .. } => *span,
        }
    }
}

const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "between", "is", "null", "true", "false", "within",
];

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let node = p.expr()?;
    let (t, span) = p.peek_full();
    if *t != Tok::Eof {
        let hint = if is_kw(t, "within") {
            Some("a window belongs inside an aggregate's parentheses, e.g. count(event = \"X\", within 7d)")
        } else if matches!(t, Tok::Sym(")")) {
            Some("remove the extra `)`")
        } else {
            Some("join conditions with `and` / `or`")
        };
        return err(
            span,
            format!("unexpected {t} after the end of the expression"),
            hint,
        );
    }
    Ok(node)
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.0)
    }
    fn peek_full(&self) -> (&Tok, Span) {
        match self.toks.get(self.pos) {
            Some((t, s)) => (t, *s),
            None => (&Tok::Eof, Span::default()),
        }
    }
    fn peek_at(&self, k: usize) -> &Tok {
        self.toks.get(self.pos + k).map_or(&Tok::Eof, |t| &t.0)
    }
    fn span(&self) -> Span {
        self.toks.get(self.pos).map_or(Span::default(), |t| t.1)
    }
    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks.get(self.pos - 1).map_or(0, |t| t.1.end)
        }
    }
    fn bump(&mut self) -> (Tok, Span) {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::Eof, Span::default()));
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(x) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str, what: &str) -> Result<Span, SyntaxError> {
        let (t, span) = self.peek_full();
        if matches!(t, Tok::Sym(x) if *x == s) {
            self.pos += 1;
            return Ok(span);
        }
        let hint = if s == ")" {
            Some("close the parenthesis")
        } else {
            None
        };
        err(span, format!("expected `{s}` {what}, found {t}"), hint)
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                self.span(),
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
                Some("split it into several tags"),
            );
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Node, SyntaxError> {
        self.enter()?;
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Node, SyntaxError> {
        let first = self.and()?;
        if !is_kw(self.peek(), "or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_kw("or") {
            items.push(self.and()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Node {
            kind: NodeKind::Or(items),
            span,
        })
    }

    fn and(&mut self) -> Result<Node, SyntaxError> {
        let first = self.not()?;
        if !is_kw(self.peek(), "and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_kw("and") {
            items.push(self.not()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Node {
            kind: NodeKind::And(items),
            span,
        })
    }

    fn not(&mut self) -> Result<Node, SyntaxError> {
        if is_kw(self.peek(), "not") {
            let start = self.span();
            self.pos += 1;
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            let inner = inner?;
            let span = start.to(inner.span);
            return Ok(Node {
                kind: NodeKind::Not(Box::new(inner)),
                span,
            });
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Node, SyntaxError> {
        let left = self.add()?;
        let op = match self.peek() {
            Tok::Sym("=") => Some(CmpOp::Eq),
            Tok::Sym("!=") => Some(CmpOp::Ne),
            Tok::Sym("<") => Some(CmpOp::Lt),
            Tok::Sym("<=") => Some(CmpOp::Le),
            Tok::Sym(">") => Some(CmpOp::Gt),
            Tok::Sym(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.add()?;
            let span = left.span.to(right.span);
            return Ok(Node {
                kind: NodeKind::Cmp(op, Box::new(left), Box::new(right)),
                span,
            });
        }
        let negated = is_kw(self.peek(), "not")
            && (is_kw(self.peek_at(1), "in") || is_kw(self.peek_at(1), "between"));
        if negated {
            self.pos += 1;
        }
        if self.eat_kw("in") {
            self.expect_sym("(", "after `in`")?;
            let mut list = Vec::new();
            loop {
                list.push(self.literal()?);
                if self.eat_sym(",") {
                    continue;
                }
                let end = self.expect_sym(")", "to close the `in` list")?;
                let span = left.span.to(end);
                return Ok(Node {
                    kind: NodeKind::In {
                        expr: Box::new(left),
                        list,
                        negated,
                    },
                    span,
                });
            }
        }
        if self.eat_kw("between") {
            let low = self.add()?;
            if !self.eat_kw("and") {
                let (t, s) = self.peek_full();
                return err(
                    s,
                    format!("expected `and` in `between … and …`, found {t}"),
                    None,
                );
            }
            let high = self.add()?;
            let span = left.span.to(high.span);
            return Ok(Node {
                kind: NodeKind::Between {
                    expr: Box::new(left),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
                span,
            });
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            let (t, s) = self.peek_full();
            if !is_kw(t, "null") {
                return err(s, format!("expected `null` after `is`, found {t}"), None);
            }
            self.pos += 1;
            let span = left.span.to(s);
            return Ok(Node {
                kind: NodeKind::IsNull {
                    expr: Box::new(left),
                    negated,
                },
                span,
            });
        }
        Ok(left)
    }

    fn literal(&mut self) -> Result<Node, SyntaxError> {
        let (t, span) = self.bump();
        let kind = match t {
            Tok::Num(n) => NodeKind::Num(n),
            Tok::Str(s) => NodeKind::Str(s),
            Tok::Sym("-") => match self.bump() {
                (Tok::Num(n), s2) => {
                    return Ok(Node {
                        kind: NodeKind::Num(-n),
                        span: span.to(s2),
                    })
                }
                (t2, s2) => {
                    return err(s2, format!("expected a number after `-`, found {t2}"), None)
                }
            },
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => NodeKind::Bool(true),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => NodeKind::Bool(false),
            other => {
                return err(
                    span,
                    format!("expected a literal in the `in` list, found {other}"),
                    Some("`in` lists hold literals: strings, numbers or booleans"),
                )
            }
        };
        Ok(Node { kind, span })
    }

    fn add(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.mul()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => ArithOp::Add,
                Tok::Sym("-") => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.mul()?;
            let span = left.span.to(right.span);
            left = Node {
                kind: NodeKind::Arith(op, Box::new(left), Box::new(right)),
                span,
            };
        }
    }

    fn mul(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => ArithOp::Mul,
                Tok::Sym("/") => ArithOp::Div,
                Tok::Sym("%") => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            let span = left.span.to(right.span);
            left = Node {
                kind: NodeKind::Arith(op, Box::new(left), Box::new(right)),
                span,
            };
        }
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        if matches!(self.peek(), Tok::Sym("-")) {
            let start = self.span();
            self.pos += 1;
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            let span = start.to(inner.span);
            if let NodeKind::Num(n) = inner.kind {
                return Ok(Node {
                    kind: NodeKind::Num(-n),
                    span,
                });
            }
            return Ok(Node {
                kind: NodeKind::Neg(Box::new(inner)),
                span,
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let (t, span) = self.bump();
        match t {
            Tok::Num(n) => Ok(Node { kind: NodeKind::Num(n), span }),
            Tok::Str(s) => Ok(Node { kind: NodeKind::Str(s), span }),
            Tok::Dur(n, u) => err(
                span,
                format!("unexpected duration {n}{}", u.letter()),
                Some("durations only appear in windows: `within 7d` or `between 60d and 30d ago` inside an aggregate"),
            ),
            Tok::Sym("(") => {
                let inner = self.expr()?;
                let end = self.expect_sym(")", "to close the parenthesis")?;
                Ok(Node { kind: inner.kind, span: span.to(end) })
            }
            Tok::Quoted(name) => self.path_or_call(name, span),
            Tok::Ident(w) => {
                let lw = w.to_ascii_lowercase();
                match lw.as_str() {
                    "true" => return Ok(Node { kind: NodeKind::Bool(true), span }),
                    "false" => return Ok(Node { kind: NodeKind::Bool(false), span }),
                    "null" => return Ok(Node { kind: NodeKind::Null, span }),
                    "within" => {
                        return err(
                            span,
                            "`within` outside an aggregate",
                            Some("a window belongs inside an aggregate's parentheses, e.g. count(event = \"X\", within 7d)"),
                        )
                    }
                    _ => {}
                }
                if RESERVED.contains(&lw.as_str()) {
                    return err(
                        span,
                        format!("missing operand before `{w}`"),
                        Some("an operator needs a value on each side"),
                    );
                }
                self.path_or_call(w, span)
            }
            Tok::Eof => err(
                span,
                "missing operand at the end of the expression",
                Some("an operator needs a value on each side"),
            ),
            Tok::Sym(")") => err(span, "missing operand before `)`", None),
            other => err(span, format!("expected a value, found {other}"), None),
        }
    }

    fn path_or_call(&mut self, first: String, span: Span) -> Result<Node, SyntaxError> {
        if matches!(self.peek(), Tok::Sym("(")) {
            self.pos += 1;
            self.enter()?;
            let r = self.call_args();
            self.depth -= 1;
            let (args, end) = r?;
            return Ok(Node {
                kind: NodeKind::Call {
                    name: first,
                    name_span: span,
                    args,
                },
                span: span.to(end),
            });
        }
        let mut parts = vec![first];
        let mut end = span;
        while matches!(self.peek(), Tok::Sym(".")) {
            self.pos += 1;
            match self.bump() {
                (Tok::Ident(s) | Tok::Quoted(s), sp) => {
                    parts.push(s);
                    end = sp;
                }
                (t, sp) => return err(sp, format!("expected a name after `.`, found {t}"), None),
            }
        }
        Ok(Node {
            kind: NodeKind::Path(parts),
            span: span.to(end),
        })
    }

    fn call_args(&mut self) -> Result<(Vec<Arg>, Span), SyntaxError> {
        let mut args = Vec::new();
        if matches!(self.peek(), Tok::Sym(")")) {
            let (_, s) = self.bump();
            return Ok((args, s));
        }
        loop {
            args.push(self.arg()?);
            if self.eat_sym(",") {
                continue;
            }
            let (t, s) = self.peek_full();
            if matches!(t, Tok::Sym(")")) {
                self.pos += 1;
                return Ok((args, s));
            }
            let hint = if *t == Tok::Eof {
                "close the call with `)`"
            } else {
                "separate arguments with `,`"
            };
            return err(
                s,
                format!("expected `,` or `)` in the argument list, found {t}"),
                Some(hint),
            );
        }
    }

    fn duration(&mut self, what: &str) -> Result<(u64, Unit, Span), SyntaxError> {
        match self.bump() {
            (Tok::Dur(n, u), s) => Ok((n, u, s)),
            (Tok::Num(_), s) => err(
                s,
                format!("missing unit in {what}"),
                Some("add a unit: m (minutes), h, d or w, e.g. 7d; or write `within 7 calendar days`"),
            ),
            (t, s) => err(s, format!("expected a duration in {what}, found {t}"), Some("e.g. 7d, 24h, 30m, 2w")),
        }
    }

    fn arg(&mut self) -> Result<Arg, SyntaxError> {
        let start = self.span();
        if is_kw(self.peek(), "within") {
            self.pos += 1;
            if let (Tok::Num(n), ns) = (self.peek().clone(), self.span()) {
                if is_kw(self.peek_at(1), "calendar") {
                    self.pos += 2;
                    if is_kw(self.peek(), "days") || is_kw(self.peek(), "day") {
                        self.pos += 1;
                    }
                    if n.fract() != 0.0 || !(1.0..=100_000.0).contains(&n) {
                        return err(ns, "calendar windows need a whole number of days ≥ 1", None);
                    }
                    let span = start.to(Span::new(start.start, self.prev_end()));
                    return Ok(Arg::Within {
                        amount: n as u64,
                        unit: Unit::Days,
                        calendar: true,
                        span,
                    });
                }
            }
            let (amount, unit, _) = self.duration("`within`")?;
            let calendar = self.eat_kw("calendar");
            if calendar && (is_kw(self.peek(), "days") || is_kw(self.peek(), "day")) {
                self.pos += 1;
            }
            let span = Span::new(start.start, self.prev_end());
            return Ok(Arg::Within {
                amount,
                unit,
                calendar,
                span,
            });
        }
        if is_kw(self.peek(), "between") {
            self.pos += 1;
            let (fa, fu, fs) = self.duration("`between … ago`")?;
            if !self.eat_kw("and") {
                let (t, s) = self.peek_full();
                return err(
                    s,
                    format!("expected `and` in `between … and … ago`, found {t}"),
                    None,
                );
            }
            let (ta, tu, _) = self.duration("`between … ago`")?;
            if !self.eat_kw("ago") {
                let (t, s) = self.peek_full();
                return err(
                    s,
                    format!("expected `ago`, found {t}"),
                    Some("e.g. between 60d and 30d ago"),
                );
            }
            let span = Span::new(start.start, self.prev_end());
            return Ok(Arg::Ago {
                from: (fa, fu),
                to: (ta, tu),
                span,
                from_span: fs,
            });
        }
        Ok(Arg::Expr(self.expr()?))
    }
}
