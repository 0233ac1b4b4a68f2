//! The type checker / compiler: tag definitions to the typed [`Plan`], and audience
//! expressions to a profile-scope [`Expr`].

use std::collections::HashMap;

use chrono::TimeZone;
use chrono_tz::Tz;

use crate::def::{BucketsDef, ExprSrc, TagDef, TagKindDef};
use crate::diag::{closest, Diagnostic, Severity, SourceMap};
use crate::ir::{
    AggFunc, Aggregate, BucketScheme, CmpOp, EventField, Expr, Func, Plan, ProfileField, Reads,
    TagBody, TagPlan, Window,
};
use crate::syntax::{self, Arg, Node, NodeKind, Span, Unit};
use crate::value::{Type, Value};

/// What the compiler knows about the workspace: names to check references against (for
/// warnings; an empty list disables the check) and tags defined elsewhere.
#[derive(Debug, Clone)]
pub struct Known {
    /// Event names seen in the data.
    pub events: Vec<String>,
    /// Trait paths seen in the data (`skin_type`, `address.city`).
    pub traits: Vec<String>,
    /// Source names.
    pub sources: Vec<String>,
    /// Tags defined elsewhere (e.g. already in the catalog) with their value types. A
    /// definition with the same name replaces the known tag.
    pub tags: Vec<(String, Type)>,
    /// The workspace time zone.
    pub time_zone: Tz,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            events: Vec::new(),
            traits: Vec::new(),
            sources: Vec::new(),
            tags: Vec::new(),
            time_zone: chrono_tz::Asia::Shanghai,
        }
    }
}

/// The result of a successful compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The plan.
    pub plan: Plan,
    /// Warnings (unknown event, trait or source names …).
    pub warnings: Vec<Diagnostic>,
}

const AGG_FUNCS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "count_distinct",
    "most_frequent",
    "first",
    "last",
];

const SCALAR_FUNCS: &[(&str, Func)] = &[
    ("days_since", Func::DaysSince),
    ("hours_since", Func::HoursSince),
    ("calendar_days_since", Func::CalendarDaysSince),
    ("coalesce", Func::Coalesce),
    ("lower", Func::Lower),
    ("upper", Func::Upper),
    ("length", Func::Length),
    ("contains", Func::Contains),
    ("starts_with", Func::StartsWith),
    ("ends_with", Func::EndsWith),
    ("concat", Func::Concat),
    ("abs", Func::Abs),
    ("round", Func::Round),
    ("floor", Func::Floor),
    ("ceil", Func::Ceil),
    ("least", Func::Least),
    ("greatest", Func::Greatest),
];

/// The DSL name of a scalar function.
pub fn func_name(f: Func) -> &'static str {
    SCALAR_FUNCS
        .iter()
        .find(|(_, g)| *g == f)
        .map_or("?", |(n, _)| n)
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Bool => "a boolean",
        Type::Number => "a number",
        Type::Str => "text",
        Type::Time => "an instant",
        Type::Null => "null",
    }
}

/// Compiles definitions into a plan: parses every expression, resolves names, checks types,
/// deduplicates aggregates, orders tags topologically and fills the lineage.
pub fn compile(defs: &[TagDef], known: &Known) -> Result<Compiled, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    // 1. Parse.
    let mut parsed: Vec<Vec<Option<Node>>> = Vec::with_capacity(defs.len());
    for d in defs {
        let mut nodes = Vec::new();
        for src in def_exprs(d) {
            match syntax::parse(&src.text) {
                Ok(n) => nodes.push(Some(n)),
                Err(e) => {
                    errors.push(src.diag(
                        Severity::Error,
                        e.span.start,
                        e.span.end,
                        e.message,
                        e.hint,
                    ));
                    nodes.push(None);
                }
            }
        }
        parsed.push(nodes);
    }
    // 2. Tag references and the dependency graph.
    let def_index: HashMap<&str, usize> = defs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, Span, usize)>> = vec![Vec::new(); defs.len()];
    let mut externals: Vec<(String, Type)> = Vec::new();
    for (i, nodes) in parsed.iter().enumerate() {
        for (k, n) in nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let mut refs = Vec::new();
            tag_refs(n, &mut refs);
            for (name, span) in refs {
                if let Some(&j) = def_index.get(name.as_str()) {
                    edges[i].push((j, span, k));
                } else if let Some((_, t)) = known.tags.iter().find(|(n, _)| *n == name) {
                    if !externals.iter().any(|(n, _)| *n == name) {
                        externals.push((name.clone(), *t));
                    }
                }
            }
        }
    }
    // 3. Cycles.
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| defs[i].name.as_str()).collect();
        let a = cycle[0];
        let b = cycle.get(1).copied().unwrap_or(a);
        let (span, k) = edges[a]
            .iter()
            .find(|(j, _, _)| *j == b)
            .map_or((Span::default(), 0), |e| (e.1, e.2));
        let srcs = def_exprs(&defs[a]);
        let msg = format!(
            "tags depend on each other in a cycle: {}",
            names.join(" → ")
        );
        let d = match srcs.get(k) {
            Some(src) => src.diag(
                Severity::Error,
                span.start,
                span.end,
                msg,
                Some("a tag cannot read itself, directly or through other tags".into()),
            ),
            None => Diagnostic::error(msg, &defs[a].origin.file, defs[a].origin.line, 1),
        };
        errors.push(d);
        return Err(errors);
    }
    // 4. Topological order, stable: always take the earliest ready definition in file order.
    let order = topo_order(&edges);
    // 5. Check and compile in order.
    let mut ck = Checker::new(known.time_zone);
    ck.known = Some(known);
    for (name, t) in &externals {
        ck.tags.insert(name.clone(), (ck.plan_tags.len(), *t));
        ck.plan_tags.push(TagPlan {
            name: name.clone(),
            body: TagBody::External,
            value_type: *t,
            reads: Reads::default(),
        });
    }
    ck.errors = errors;
    ck.all_tags = defs
        .iter()
        .map(|d| d.name.clone())
        .chain(known.tags.iter().map(|(n, _)| n.clone()))
        .collect();
    for i in order {
        let d = &defs[i];
        let srcs = def_exprs(d);
        ck.reads = Reads::default();
        let mut body_exprs = Vec::new();
        let mut ok = true;
        for (k, src) in srcs.iter().enumerate() {
            let Some(Some(node)) = parsed[i].get(k) else {
                ok = false;
                continue;
            };
            let want = match d.kind {
                TagKindDef::Rule(_) | TagKindDef::Stage(_) => Some(Type::Bool),
                TagKindDef::Buckets { .. } => Some(Type::Number),
                _ => None,
            };
            let cx = Cx {
                src,
                event: None,
                audience: false,
            };
            match ck.check(node, want, &cx) {
                Ok(e) => {
                    let t = ck.ty(&e);
                    let bad = match (&d.kind, want) {
                        (_, Some(w)) => t != w && t != Type::Null,
                        (TagKindDef::Metric(_), None) => t == Type::Bool,
                        _ => false,
                    };
                    if bad {
                        let what = match d.kind {
                            TagKindDef::Rule(_) => "a rule must be a condition (a boolean)",
                            TagKindDef::Stage(_) => "a stage case must be a condition (a boolean)",
                            TagKindDef::Buckets { .. } => "`of` must be a number",
                            _ => "a metric must be a number, text or an instant, not a boolean",
                        };
                        let hint = if matches!(d.kind, TagKindDef::Metric(_)) {
                            "for a yes/no tag write `rule:` instead of `kind: metric`"
                        } else {
                            "compare it with something, e.g. `>= 1`"
                        };
                        ck.errors.push(src.diag(
                            Severity::Error,
                            node.span.start,
                            node.span.end,
                            format!("{what}, found {}", type_name(t)),
                            Some(hint.into()),
                        ));
                        ok = false;
                    }
                    body_exprs.push(e);
                }
                Err(()) => ok = false,
            }
        }
        let (body, value_type) = match &d.kind {
            TagKindDef::Rule(_) => (body_exprs.pop().map(TagBody::Rule), Type::Bool),
            TagKindDef::Metric(_) => {
                let t = body_exprs.first().map_or(Type::Null, |e| ck.ty(e));
                (
                    body_exprs.pop().map(TagBody::Metric),
                    if t == Type::Null { Type::Number } else { t },
                )
            }
            TagKindDef::Stage(cases) => {
                let body = (body_exprs.len() == cases.len()).then(|| {
                    TagBody::Stage(
                        cases
                            .iter()
                            .map(|(l, _)| l.clone())
                            .zip(body_exprs.drain(..))
                            .collect(),
                    )
                });
                (body, Type::Str)
            }
            TagKindDef::Buckets {
                scheme, reverse, ..
            } => {
                let scheme = match scheme {
                    BucketsDef::Quantiles(n) => BucketScheme::Quantiles(*n),
                    BucketsDef::Thresholds(t) => BucketScheme::Thresholds(t.clone()),
                };
                let body = body_exprs.pop().map(|of| TagBody::Buckets {
                    of,
                    scheme,
                    reverse: *reverse,
                });
                (body, Type::Number)
            }
            TagKindDef::External { value_type, .. } => (Some(TagBody::External), *value_type),
        };
        let idx = ck.plan_tags.len();
        ck.tags.insert(d.name.clone(), (idx, value_type));
        if let (true, Some(body)) = (ok, body) {
            ck.plan_tags.push(TagPlan {
                name: d.name.clone(),
                body,
                value_type,
                reads: std::mem::take(&mut ck.reads),
            });
        } else {
            // Keep indices consistent for later tags; the plan is refused anyway.
            ck.plan_tags.push(TagPlan {
                name: d.name.clone(),
                body: TagBody::External,
                value_type,
                reads: Reads::default(),
            });
        }
    }
    if !ck.errors.is_empty() {
        return Err(ck.errors);
    }
    Ok(Compiled {
        plan: Plan {
            aggregates: ck.aggregates,
            tags: ck.plan_tags,
            time_zone: known.time_zone,
        },
        warnings: ck.warnings,
    })
}

/// Compiles an audience expression: a profile-scope condition over tags (a bare name or
/// `tag.NAME`; [`Expr::Tag`] indexes `tags`) and traits. Aggregates are not allowed.
pub fn compile_audience(
    text: &str,
    tags: &[(String, Type)],
    tz: Tz,
) -> Result<Expr, Vec<Diagnostic>> {
    let src = ExprSrc {
        text: text.to_string(),
        map: SourceMap::standalone("<audience>", text),
    };
    let node = syntax::parse(text).map_err(|e| {
        vec![src.diag(Severity::Error, e.span.start, e.span.end, e.message, e.hint)]
    })?;
    let mut ck = Checker::new(tz);
    for (i, (n, t)) in tags.iter().enumerate() {
        ck.tags.entry(n.clone()).or_insert((i, *t));
        ck.plan_tags.push(TagPlan {
            name: n.clone(),
            body: TagBody::External,
            value_type: *t,
            reads: Reads::default(),
        });
    }
    let cx = Cx {
        src: &src,
        event: None,
        audience: true,
    };
    let e = ck.check(&node, Some(Type::Bool), &cx);
    if let Ok(e) = &e {
        let t = ck.ty(e);
        if t != Type::Bool {
            ck.err(
                &cx,
                node.span,
                format!(
                    "an audience must be a condition (a boolean), found {}",
                    type_name(t)
                ),
                None,
            );
        }
    }
    match e {
        Ok(e) if ck.errors.is_empty() => Ok(e),
        _ => Err(ck.errors),
    }
}

fn def_exprs(d: &TagDef) -> Vec<&ExprSrc> {
    match &d.kind {
        TagKindDef::Rule(e) | TagKindDef::Metric(e) => vec![e],
        TagKindDef::Stage(cases) => cases.iter().map(|(_, e)| e).collect(),
        TagKindDef::Buckets { of, .. } => vec![of],
        TagKindDef::External { .. } => Vec::new(),
    }
}

fn tag_refs(n: &Node, out: &mut Vec<(String, Span)>) {
    match &n.kind {
        NodeKind::Path(p) if p.len() == 2 && p[0] == "tag" => out.push((p[1].clone(), n.span)),
        NodeKind::Num(_)
        | NodeKind::Str(_)
        | NodeKind::Bool(_)
        | NodeKind::Null
        | NodeKind::Path(_) => {}
        NodeKind::Call { args, .. } => {
            for a in args {
                if let Arg::Expr(e) = a {
                    tag_refs(e, out);
                }
            }
        }
        NodeKind::Not(x) | NodeKind::Neg(x) => tag_refs(x, out),
        NodeKind::And(xs) | NodeKind::Or(xs) => xs.iter().for_each(|x| tag_refs(x, out)),
        NodeKind::Cmp(_, a, b) | NodeKind::Arith(_, a, b) => {
            tag_refs(a, out);
            tag_refs(b, out);
        }
        NodeKind::In { expr, .. } | NodeKind::IsNull { expr, .. } => tag_refs(expr, out),
        NodeKind::Between {
            expr, low, high, ..
        } => {
            tag_refs(expr, out);
            tag_refs(low, out);
            tag_refs(high, out);
        }
    }
}

/// A cycle as a list of nodes `a, b, …, a`, if any.
fn find_cycle(edges: &[Vec<(usize, Span, usize)>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum C {
        White,
        Grey,
        Black,
    }
    fn dfs(
        v: usize,
        edges: &[Vec<(usize, Span, usize)>],
        color: &mut [C],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        color[v] = C::Grey;
        stack.push(v);
        for &(w, _, _) in &edges[v] {
            match color[w] {
                C::Grey => {
                    let pos = stack.iter().position(|&x| x == w).unwrap_or(0);
                    let mut cyc: Vec<usize> = stack[pos..].to_vec();
                    cyc.push(w);
                    return Some(cyc);
                }
                C::White => {
                    if let Some(c) = dfs(w, edges, color, stack) {
                        return Some(c);
                    }
                }
                C::Black => {}
            }
        }
        stack.pop();
        color[v] = C::Black;
        None
    }
    let mut color = vec![C::White; edges.len()];
    for v in 0..edges.len() {
        if color[v] == C::White {
            let mut stack = Vec::new();
            if let Some(c) = dfs(v, edges, &mut color, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn topo_order(edges: &[Vec<(usize, Span, usize)>]) -> Vec<usize> {
    let n = edges.len();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !done[i] && edges[i].iter().all(|(j, _, _)| done[*j]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => break, // only with a cycle, which was refused before
        }
    }
    order
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Value,
    Filter,
}

struct Cx<'a> {
    src: &'a ExprSrc,
    /// Inside an aggregate: the role of the argument being checked.
    event: Option<Role>,
    audience: bool,
}

struct Checker<'k> {
    tz: Tz,
    known: Option<&'k Known>,
    aggregates: Vec<Aggregate>,
    tags: HashMap<String, (usize, Type)>,
    plan_tags: Vec<TagPlan>,
    reads: Reads,
    /// Every tag name in scope (for hints, before all are compiled).
    all_tags: Vec<String>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

type R = Result<Expr, ()>;

/// True for expressions whose type comes from their context (JSON-typed paths, `null`, and
/// functions that pass their argument's type through).
fn flexible(n: &Node) -> bool {
    match &n.kind {
        NodeKind::Null => true,
        NodeKind::Path(p) => p.len() >= 2 && (p[0] == "properties" || p[0] == "traits"),
        NodeKind::Call { name, args, .. } => {
            let name = name.to_ascii_lowercase();
            let first_flexible = matches!(args.first(), Some(Arg::Expr(a)) if flexible(a));
            match name.as_str() {
                "min" | "max" | "first" | "last" | "most_frequent" => first_flexible,
                "coalesce" | "least" | "greatest" => args
                    .iter()
                    .all(|a| matches!(a, Arg::Expr(x) if flexible(x))),
                _ => false,
            }
        }
        _ => false,
    }
}

impl<'k> Checker<'k> {
    fn new(tz: Tz) -> Self {
        Checker {
            tz,
            known: None,
            aggregates: Vec::new(),
            tags: HashMap::new(),
            plan_tags: Vec::new(),
            reads: Reads::default(),
            all_tags: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn err(&mut self, cx: &Cx<'_>, span: Span, msg: impl Into<String>, hint: Option<String>) {
        self.errors.push(
            cx.src
                .diag(Severity::Error, span.start, span.end, msg, hint),
        );
    }

    fn fail(&mut self, cx: &Cx<'_>, span: Span, msg: impl Into<String>, hint: Option<&str>) -> R {
        self.err(cx, span, msg, hint.map(str::to_string));
        Err(())
    }

    fn ty(&self, e: &Expr) -> Type {
        match e {
            Expr::Agg(i) => self
                .aggregates
                .get(*i)
                .map_or(Type::Null, Aggregate::result_type),
            Expr::Tag(i) => self.plan_tags.get(*i).map_or(Type::Null, |t| t.value_type),
            Expr::Call(Func::Coalesce | Func::Least | Func::Greatest, args) => args
                .iter()
                .map(|a| self.ty(a))
                .find(|t| *t != Type::Null)
                .unwrap_or(Type::Null),
            other => other.ty(),
        }
    }

    /// Checks that `e` (from `n`) has type `want` (null is accepted everywhere).
    fn expect(
        &mut self,
        cx: &Cx<'_>,
        n: &Node,
        e: &Expr,
        want: Type,
        what: &str,
    ) -> Result<(), ()> {
        let t = self.ty(e);
        if t == want || t == Type::Null {
            return Ok(());
        }
        let hint = match (want, t) {
            (Type::Bool, Type::Number) => Some("compare it, e.g. `>= 1`".to_string()),
            (Type::Number, Type::Time) => {
                Some("to measure time use days_since(t) or hours_since(t)".into())
            }
            _ => None,
        };
        self.err(
            cx,
            n.span,
            format!(
                "type mismatch: {what} needs {}, found {}",
                type_name(want),
                type_name(t)
            ),
            hint,
        );
        Err(())
    }

    fn check(&mut self, n: &Node, want: Option<Type>, cx: &Cx<'_>) -> R {
        match &n.kind {
            NodeKind::Num(x) => Ok(Expr::Lit(Value::Num(*x))),
            NodeKind::Str(s) => Ok(Expr::Lit(Value::Str(s.as_str().into()))),
            NodeKind::Bool(b) => Ok(Expr::Lit(Value::Bool(*b))),
            NodeKind::Null => Ok(Expr::Lit(Value::Null)),
            NodeKind::Path(p) => self.path(n, p, want, cx),
            NodeKind::Call {
                name,
                name_span,
                args,
            } => self.call(n, name, *name_span, args, want, cx),
            NodeKind::Not(x) => {
                let e = self.check(x, Some(Type::Bool), cx)?;
                self.expect(cx, x, &e, Type::Bool, "`not`")?;
                Ok(Expr::Not(Box::new(e)))
            }
            NodeKind::And(xs) | NodeKind::Or(xs) => {
                let word = if matches!(n.kind, NodeKind::And(_)) {
                    "`and`"
                } else {
                    "`or`"
                };
                let mut out = Vec::new();
                let mut ok = true;
                for x in xs {
                    match self.check(x, Some(Type::Bool), cx) {
                        Ok(e) => {
                            ok &= self.expect(cx, x, &e, Type::Bool, word).is_ok();
                            out.push(e);
                        }
                        Err(()) => ok = false,
                    }
                }
                if !ok {
                    return Err(());
                }
                Ok(if matches!(n.kind, NodeKind::And(_)) {
                    Expr::And(out)
                } else {
                    Expr::Or(out)
                })
            }
            NodeKind::Cmp(op, a, b) => self.cmp(n, *op, a, b, cx),
            NodeKind::Arith(op, a, b) => {
                let ea = self.check(a, Some(Type::Number), cx);
                let eb = self.check(b, Some(Type::Number), cx);
                let (ea, eb) = (ea?, eb?);
                let ok_a = self.expect(cx, a, &ea, Type::Number, "arithmetic");
                let ok_b = self.expect(cx, b, &eb, Type::Number, "arithmetic");
                ok_a?;
                ok_b?;
                Ok(Expr::Arith(*op, Box::new(ea), Box::new(eb)))
            }
            NodeKind::Neg(x) => {
                let e = self.check(x, Some(Type::Number), cx)?;
                self.expect(cx, x, &e, Type::Number, "unary minus")?;
                Ok(Expr::Neg(Box::new(e)))
            }
            NodeKind::In {
                expr,
                list,
                negated,
            } => {
                let mut vals = Vec::new();
                let mut lt = Type::Null;
                for m in list {
                    let v = match &m.kind {
                        NodeKind::Num(x) => Value::Num(*x),
                        NodeKind::Str(s) => Value::Str(s.as_str().into()),
                        NodeKind::Bool(b) => Value::Bool(*b),
                        _ => return self.fail(cx, m.span, "`in` lists hold literals", None),
                    };
                    let t = Expr::Lit(v.clone()).ty();
                    if lt != Type::Null && t != lt {
                        return self.fail(
                            cx,
                            m.span,
                            format!(
                                "mixed types in the `in` list: {} after {}",
                                type_name(t),
                                type_name(lt)
                            ),
                            None,
                        );
                    }
                    lt = t;
                    vals.push(v);
                }
                let e = self.check(expr, Some(lt), cx)?;
                self.expect(cx, expr, &e, lt, "`in` with this list")?;
                if let Expr::Event(f @ (EventField::Name | EventField::Source)) = &e {
                    for (v, m) in vals.iter().zip(list) {
                        if let Some(s) = v.as_str() {
                            self.note_name(cx, *f, s, m.span);
                        }
                    }
                }
                Ok(Expr::In {
                    expr: Box::new(e),
                    list: vals,
                    negated: *negated,
                })
            }
            NodeKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                // The first operand with a fixed type gives the type to the JSON-typed ones.
                let mut t: Option<Type> = None;
                let mut done: [Option<Expr>; 3] = [None, None, None];
                for (i, x) in [expr, low, high].into_iter().enumerate() {
                    if t.is_none() && !flexible(x) {
                        let e = self.check(x, None, cx)?;
                        t = Some(self.ty(&e));
                        done[i] = Some(e);
                    }
                }
                let mut out = Vec::new();
                for (i, x) in [expr, low, high].into_iter().enumerate() {
                    let e = match done[i].take() {
                        Some(e) => e,
                        None => self.check(x, t, cx)?,
                    };
                    out.push(e);
                }
                let eh = out.pop().unwrap_or(Expr::Lit(Value::Null));
                let el = out.pop().unwrap_or(Expr::Lit(Value::Null));
                let ex = out.pop().unwrap_or(Expr::Lit(Value::Null));
                let el = self.time_literal(cx, low, el, &ex)?;
                let eh = self.time_literal(cx, high, eh, &ex)?;
                self.finish_between(cx, n, ex, el, eh, *negated)
            }
            NodeKind::IsNull { expr, negated } => {
                let e = self.check(expr, None, cx)?;
                Ok(Expr::IsNull {
                    expr: Box::new(e),
                    negated: *negated,
                })
            }
        }
    }

    fn finish_between(
        &mut self,
        cx: &Cx<'_>,
        n: &Node,
        ex: Expr,
        el: Expr,
        eh: Expr,
        negated: bool,
    ) -> R {
        let (tx, tl, th) = (self.ty(&ex), self.ty(&el), self.ty(&eh));
        let ts = [tx, tl, th];
        let t0 = ts
            .iter()
            .copied()
            .find(|t| *t != Type::Null)
            .unwrap_or(Type::Null);
        if ts.iter().any(|t| *t != t0 && *t != Type::Null) {
            return self.fail(
                cx,
                n.span,
                format!(
                    "type mismatch in `between`: {}, {} and {}",
                    type_name(tx),
                    type_name(tl),
                    type_name(th)
                ),
                None,
            );
        }
        Ok(Expr::Between {
            expr: Box::new(ex),
            low: Box::new(el),
            high: Box::new(eh),
            negated,
        })
    }

    fn cmp(&mut self, n: &Node, op: CmpOp, a: &Node, b: &Node, cx: &Cx<'_>) -> R {
        if matches!(a.kind, NodeKind::Null) || matches!(b.kind, NodeKind::Null) {
            return self.fail(
                cx,
                n.span,
                "comparison with null is always false",
                Some("write `x is null` or `x is not null`"),
            );
        }
        let (ea, eb) = match (flexible(a), flexible(b)) {
            (true, false) => {
                let eb = self.check(b, None, cx)?;
                let t = self.ty(&eb);
                (self.check(a, Some(t), cx)?, eb)
            }
            (false, true) | (true, true) => {
                let ea = self.check(a, None, cx)?;
                let t = self.ty(&ea);
                (ea, self.check(b, Some(t), cx)?)
            }
            (false, false) => {
                let ea = self.check(a, None, cx);
                let eb = self.check(b, None, cx);
                (ea?, eb?)
            }
        };
        let ea = self.time_literal(cx, a, ea, &eb)?;
        let eb = self.time_literal(cx, b, eb, &ea)?;
        let (ta, tb) = (self.ty(&ea), self.ty(&eb));
        if ta != tb && ta != Type::Null && tb != Type::Null {
            let hint = match (ta, tb) {
                (Type::Number, Type::Str) | (Type::Str, Type::Number) => {
                    Some("a count or sum is a number: compare it with a number, e.g. `>= 1`")
                }
                _ => None,
            };
            return self.fail(
                cx,
                n.span,
                format!(
                    "type mismatch: cannot compare {} with {}",
                    type_name(ta),
                    type_name(tb)
                ),
                hint,
            );
        }
        if ta == Type::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return self.fail(
                cx,
                n.span,
                "booleans can only be compared with = or !=",
                None,
            );
        }
        // Names compared with `event` / `source`: lineage and warnings.
        for (e, other, node) in [(&ea, &eb, b), (&eb, &ea, a)] {
            if let (
                Expr::Event(f @ (EventField::Name | EventField::Source)),
                Expr::Lit(Value::Str(s)),
            ) = (e, other)
            {
                self.note_name(cx, *f, s, node.span);
            }
        }
        // Literal on the right, so equal filters deduplicate.
        if matches!(ea, Expr::Lit(_)) && !matches!(eb, Expr::Lit(_)) {
            let flipped = match op {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                other => other,
            };
            return Ok(Expr::Cmp(flipped, Box::new(eb), Box::new(ea)));
        }
        Ok(Expr::Cmp(op, Box::new(ea), Box::new(eb)))
    }

    /// A string literal compared with an instant becomes an instant (RFC 3339, or a date
    /// `YYYY-MM-DD` meaning local midnight in the workspace time zone).
    fn time_literal(&mut self, cx: &Cx<'_>, n: &Node, e: Expr, other: &Expr) -> R {
        if self.ty(other) != Type::Time {
            return Ok(e);
        }
        let Expr::Lit(Value::Str(s)) = &e else {
            return Ok(e);
        };
        if let Some(t) = crate::eval::parse_time(s) {
            return Ok(Expr::Lit(Value::Time(t)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let local = d
                .and_hms_opt(0, 0, 0)
                .and_then(|dt| self.tz.from_local_datetime(&dt).earliest());
            if let Some(l) = local {
                return Ok(Expr::Lit(Value::Time(l.timestamp_millis())));
            }
        }
        self.fail(
            cx,
            n.span,
            format!("\"{s}\" is not an instant"),
            Some(
                "write an RFC 3339 time such as \"2024-06-30T16:00:00Z\" or a date \"2024-06-30\"",
            ),
        )
    }

    fn note_name(&mut self, cx: &Cx<'_>, f: EventField, name: &str, span: Span) {
        let (set, list, what) = match f {
            EventField::Name => (
                &mut self.reads.events,
                self.known.map(|k| &k.events),
                "event",
            ),
            _ => (
                &mut self.reads.sources,
                self.known.map(|k| &k.sources),
                "source",
            ),
        };
        set.insert(name.to_string());
        if let Some(list) = list {
            if !list.is_empty() && !list.iter().any(|k| k == name) {
                let hint = closest(name, list.iter().map(String::as_str))
                    .map(|c| format!("did you mean \"{c}\"?"));
                self.warnings.push(cx.src.diag(
                    Severity::Warning,
                    span.start,
                    span.end,
                    format!("unknown {what} \"{name}\""),
                    hint,
                ));
            }
        }
    }

    fn path(&mut self, n: &Node, p: &[String], want: Option<Type>, cx: &Cx<'_>) -> R {
        let head = p.first().map(String::as_str).unwrap_or("");
        let flex_ty = match want {
            Some(Type::Null) | None => Type::Str,
            Some(t) => t,
        };
        let event_only = |this: &mut Self, what: &str| -> Result<(), ()> {
            if cx.event.is_none() {
                this.err(
                    cx,
                    n.span,
                    format!("`{what}` is an event field, only available inside an aggregate"),
                    Some(format!("e.g. count({what} = …, within 7d)")),
                );
                return Err(());
            }
            Ok(())
        };
        let profile_only = |this: &mut Self, what: &str| -> Result<(), ()> {
            if cx.event.is_some() {
                this.err(cx, n.span, format!("`{what}` cannot be used inside an aggregate's filter or value"), Some("filters read event fields: event, type, source, timestamp, properties.NAME".into()));
                return Err(());
            }
            Ok(())
        };
        match (head, p.len()) {
            ("event" | "type" | "source" | "timestamp", 1) => {
                event_only(self, head)?;
                Ok(Expr::Event(match head {
                    "event" => EventField::Name,
                    "type" => EventField::Type,
                    "source" => EventField::Source,
                    _ => EventField::Timestamp,
                }))
            }
            ("properties", k) if k >= 2 => {
                event_only(self, "properties")?;
                self.reads.properties.insert(p[1..].join("."));
                Ok(Expr::Property {
                    path: p[1..].to_vec(),
                    ty: flex_ty,
                })
            }
            ("traits", k) if k >= 2 => {
                profile_only(self, "traits")?;
                let joined = p[1..].join(".");
                if let Some(k) = self.known {
                    if !k.traits.is_empty() && !k.traits.iter().any(|t| *t == joined || *t == p[1])
                    {
                        let hint = closest(&joined, k.traits.iter().map(String::as_str))
                            .map(|c| format!("did you mean \"{c}\"?"));
                        self.warnings.push(cx.src.diag(
                            Severity::Warning,
                            n.span.start,
                            n.span.end,
                            format!("unknown trait \"{joined}\""),
                            hint,
                        ));
                    }
                }
                self.reads.traits.insert(joined);
                Ok(Expr::Trait {
                    path: p[1..].to_vec(),
                    ty: flex_ty,
                })
            }
            ("properties" | "traits", 1) => {
                self.fail(cx, n.span, format!("name a field: `{head}.NAME`"), None)
            }
            ("first_seen" | "last_seen", 1) => {
                profile_only(self, head)?;
                Ok(Expr::Profile(if head == "first_seen" {
                    ProfileField::FirstSeen
                } else {
                    ProfileField::LastSeen
                }))
            }
            ("tag", 2) => {
                profile_only(self, "tag")?;
                self.tag_ref(n, &p[1], cx)
            }
            ("now", 1) => self.fail(cx, n.span, "`now` is a function", Some("write now()")),
            (name, 1) if cx.audience => self.tag_ref(n, name, cx),
            (name, 1)
                if self.tags.contains_key(name) || self.all_tags.iter().any(|t| t == name) =>
            {
                self.fail(
                    cx,
                    n.span,
                    format!("bare tag name `{name}`"),
                    Some(&format!("refer to other tags as tag.{name}")),
                )
            }
            _ => {
                let joined = p.join(".");
                let mut cands = vec![
                    "event",
                    "type",
                    "source",
                    "timestamp",
                    "first_seen",
                    "last_seen",
                ];
                if cx.event.is_none() {
                    cands.retain(|c| matches!(*c, "first_seen" | "last_seen"));
                }
                let hint = match closest(&joined, cands.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if cx.event.is_some() => "event fields are event, type, source, timestamp and properties.NAME".to_string(),
                    None => "profiles have traits.NAME, tag.NAME, first_seen, last_seen and aggregates such as count(…)".to_string(),
                };
                self.fail(cx, n.span, format!("unknown name `{joined}`"), Some(&hint))
            }
        }
    }

    fn tag_ref(&mut self, n: &Node, name: &str, cx: &Cx<'_>) -> R {
        match self.tags.get(name) {
            Some(&(i, _)) => {
                self.reads.tags.insert(name.to_string());
                Ok(Expr::Tag(i))
            }
            None => {
                let names = self
                    .tags
                    .keys()
                    .chain(self.all_tags.iter())
                    .map(String::as_str);
                let hint = closest(name, names).map(|c| format!("did you mean \"{c}\"?"));
                self.err(cx, n.span, format!("unknown tag \"{name}\""), hint);
                Err(())
            }
        }
    }

    fn call(
        &mut self,
        n: &Node,
        name: &str,
        name_span: Span,
        args: &[Arg],
        want: Option<Type>,
        cx: &Cx<'_>,
    ) -> R {
        let lname = name.to_ascii_lowercase();
        if AGG_FUNCS.contains(&lname.as_str()) {
            if cx.audience {
                return self.fail(
                    cx,
                    name_span,
                    format!("aggregates such as `{lname}` are not allowed in audiences"),
                    Some("define a tag with the aggregate and select on the tag"),
                );
            }
            match cx.event {
                Some(Role::Filter) => return self.fail(cx, name_span, format!("aggregate `{lname}` inside a filter"), Some("filters test one event; move the aggregate out, e.g. count(A) >= 1 and count(B) >= 1")),
                Some(Role::Value) => return self.fail(cx, name_span, format!("aggregates cannot nest: `{lname}` inside another aggregate"), None),
                None => {}
            }
            return self.aggregate(n, &lname, name_span, args, want, cx);
        }
        if lname == "now" {
            if !args.is_empty() {
                return self.fail(cx, n.span, "now() takes no arguments", None);
            }
            return Ok(Expr::AsOf);
        }
        let Some(&(_, f)) = SCALAR_FUNCS.iter().find(|(k, _)| *k == lname) else {
            let all = AGG_FUNCS
                .iter()
                .copied()
                .chain(SCALAR_FUNCS.iter().map(|(k, _)| *k))
                .chain(["now"]);
            let hint = closest(&lname, all).map(|c| format!("did you mean \"{c}\"?"));
            self.err(cx, name_span, format!("unknown function \"{name}\""), hint);
            return Err(());
        };
        let mut exprs = Vec::new();
        for a in args {
            match a {
                Arg::Expr(x) => exprs.push(x),
                Arg::Within { span, .. } | Arg::Ago { span, .. } => {
                    return self.fail(
                        cx,
                        *span,
                        format!(
                            "a window is only allowed in aggregate functions, not in {lname}()"
                        ),
                        Some("e.g. count(event = \"X\", within 7d)"),
                    );
                }
            }
        }
        let (min, max, arg_ty): (usize, usize, Option<Type>) = match f {
            Func::DaysSince | Func::HoursSince | Func::CalendarDaysSince => {
                (1, 1, Some(Type::Time))
            }
            Func::Lower | Func::Upper | Func::Length => (1, 1, Some(Type::Str)),
            Func::Contains | Func::StartsWith | Func::EndsWith => (2, 2, Some(Type::Str)),
            Func::Abs | Func::Floor | Func::Ceil => (1, 1, Some(Type::Number)),
            Func::Round => (1, 2, Some(Type::Number)),
            Func::Concat => (1, 64, None),
            Func::Coalesce | Func::Least | Func::Greatest => (1, 64, None),
        };
        if exprs.len() < min || exprs.len() > max {
            let count = if min == max {
                format!("{min}")
            } else if max == 64 {
                format!("at least {min}")
            } else {
                format!("{min} or {max}")
            };
            return self.fail(
                cx,
                n.span,
                format!("{lname}() takes {count} argument(s), found {}", exprs.len()),
                None,
            );
        }
        let mut out = Vec::new();
        match f {
            Func::Coalesce | Func::Least | Func::Greatest => {
                // Fixed-type arguments first; they give the type to the JSON-typed ones.
                let mut t = want.filter(|t| *t != Type::Null);
                let mut typed: Vec<Option<Expr>> = vec![None; exprs.len()];
                for (i, x) in exprs.iter().enumerate() {
                    if !flexible(x) {
                        let e = self.check(x, t, cx)?;
                        if t.is_none() && self.ty(&e) != Type::Null {
                            t = Some(self.ty(&e));
                        }
                        typed[i] = Some(e);
                    }
                }
                let t = t.unwrap_or(Type::Str);
                for (i, x) in exprs.iter().enumerate() {
                    let e = match typed[i].take() {
                        Some(e) => e,
                        None => self.check(x, Some(t), cx)?,
                    };
                    self.expect(cx, x, &e, t, &format!("{lname}()"))?;
                    out.push(e);
                }
            }
            _ => {
                for x in exprs {
                    let e = self.check(x, arg_ty, cx)?;
                    if let Some(t) = arg_ty {
                        self.expect(cx, x, &e, t, &format!("{lname}()"))?;
                    }
                    out.push(e);
                }
            }
        }
        Ok(Expr::Call(f, out))
    }

    fn window(&mut self, cx: &Cx<'_>, a: &Arg) -> Result<Window, ()> {
        match a {
            Arg::Within {
                amount,
                unit,
                calendar: false,
                span,
            } => {
                if *amount == 0 {
                    self.err(
                        cx,
                        *span,
                        "an empty window: `within` needs a length above 0",
                        None,
                    );
                    return Err(());
                }
                let ms = (*amount as i64)
                    .checked_mul(unit.ms())
                    .filter(|m| *m < 100_000 * 86_400_000);
                match ms {
                    Some(ms) => Ok(Window::Rolling { ms }),
                    None => {
                        self.err(cx, *span, "window too long (at most 100000 days)", None);
                        Err(())
                    }
                }
            }
            Arg::Within {
                amount,
                unit,
                calendar: true,
                span,
            } => {
                let days = match unit {
                    Unit::Days => Some(*amount),
                    Unit::Weeks => amount.checked_mul(7),
                    _ => None,
                };
                match days {
                    Some(d) if (1..=100_000).contains(&d) => {
                        Ok(Window::Calendar { days: d as u32 })
                    }
                    Some(_) => {
                        self.err(cx, *span, "calendar windows need 1 to 100000 days", None);
                        Err(())
                    }
                    None => {
                        self.err(
                            cx,
                            *span,
                            "calendar windows count days",
                            Some("e.g. within 7 calendar days".into()),
                        );
                        Err(())
                    }
                }
            }
            Arg::Ago {
                from,
                to,
                span,
                from_span,
            } => {
                let f = (from.0 as i64).saturating_mul(from.1.ms());
                let t = (to.0 as i64).saturating_mul(to.1.ms());
                if f <= t {
                    self.err(
                        cx,
                        *from_span,
                        format!(
                            "wrong window order: {}{} is not further back than {}{}",
                            from.0,
                            from.1.letter(),
                            to.0,
                            to.1.letter()
                        ),
                        Some(format!(
                            "write the far end first: between {}{} and {}{} ago",
                            to.0,
                            to.1.letter(),
                            from.0,
                            from.1.letter()
                        )),
                    );
                    let _ = span;
                    return Err(());
                }
                Ok(Window::Ago {
                    from_ms: f,
                    to_ms: t,
                })
            }
            Arg::Expr(x) => {
                self.err(cx, x.span, "expected a window", None);
                Err(())
            }
        }
    }

    fn aggregate(
        &mut self,
        n: &Node,
        f: &str,
        name_span: Span,
        args: &[Arg],
        want: Option<Type>,
        cx: &Cx<'_>,
    ) -> R {
        let mut exprs: Vec<&Node> = Vec::new();
        let mut window = Window::All;
        let mut seen_window = false;
        for a in args {
            match a {
                Arg::Expr(x) => {
                    if seen_window {
                        return self.fail(cx, x.span, "the window must be the last argument", Some("e.g. sum(properties.revenue, event = \"Order Completed\", within 90d)"));
                    }
                    exprs.push(x);
                }
                w => {
                    if seen_window {
                        return self.fail(cx, w.span(), "only one window per aggregate", None);
                    }
                    window = self.window(cx, w)?;
                    seen_window = true;
                }
            }
        }
        let vcx = Cx {
            src: cx.src,
            event: Some(Role::Value),
            audience: false,
        };
        let fcx = Cx {
            src: cx.src,
            event: Some(Role::Filter),
            audience: false,
        };
        let filter_of = |this: &mut Self, x: Option<&&Node>| -> Result<Option<Expr>, ()> {
            match x {
                None => Ok(None),
                Some(x) => {
                    let e = this.check(x, Some(Type::Bool), &fcx)?;
                    this.expect(&fcx, x, &e, Type::Bool, "a filter")?;
                    Ok(Some(e))
                }
            }
        };
        let usage = |f: &str| {
            match f {
            "count" => "count([filter][, window]), e.g. count(event = \"Order Completed\", within 30d)",
            "first" | "last" => "first|last(value[, filter][, window]) or first|last(filter[, window])",
            _ => "FUNC(value[, filter][, window]), e.g. sum(properties.revenue, event = \"Order Completed\")",
        }
        };
        let (func, arg, filter) = match f {
            "count" => {
                if exprs.len() > 1 {
                    return self.fail(cx, n.span, "count takes at most one filter", Some(usage(f)));
                }
                (AggFunc::Count, None, filter_of(self, exprs.first())?)
            }
            "first" | "last" => {
                let time_form = match exprs.as_slice() {
                    [] => true,
                    [x] if !flexible(x) => {
                        let e = self.check(x, None, &vcx)?;
                        self.ty(&e) == Type::Bool
                    }
                    _ => false,
                };
                if exprs.len() > 2 {
                    return self.fail(
                        cx,
                        n.span,
                        format!("{f} takes at most a value and a filter"),
                        Some(usage(f)),
                    );
                }
                if time_form {
                    let func = if f == "first" {
                        AggFunc::FirstTime
                    } else {
                        AggFunc::LastTime
                    };
                    (func, None, filter_of(self, exprs.first())?)
                } else {
                    let func = if f == "first" {
                        AggFunc::First
                    } else {
                        AggFunc::Last
                    };
                    let v = self.check(exprs[0], want, &vcx)?;
                    (func, Some(v), filter_of(self, exprs.get(1))?)
                }
            }
            _ => {
                if exprs.is_empty() || exprs.len() > 2 {
                    return self.fail(
                        cx,
                        n.span,
                        format!("{f} takes a value and an optional filter"),
                        Some(usage(f)),
                    );
                }
                let (func, vt) = match f {
                    "sum" => (AggFunc::Sum, Some(Type::Number)),
                    "avg" => (AggFunc::Avg, Some(Type::Number)),
                    "min" => (AggFunc::Min, want),
                    "max" => (AggFunc::Max, want),
                    "most_frequent" => (AggFunc::MostFrequent, want),
                    _ => (AggFunc::CountDistinct, None),
                };
                let v = self.check(exprs[0], vt, &vcx)?;
                if matches!(func, AggFunc::Sum | AggFunc::Avg) {
                    self.expect(&vcx, exprs[0], &v, Type::Number, f)?;
                }
                (func, Some(v), filter_of(self, exprs.get(1))?)
            }
        };
        let _ = name_span;
        let agg = Aggregate {
            func,
            arg,
            filter,
            window,
        };
        let idx = match self.aggregates.iter().position(|a| *a == agg) {
            Some(i) => i,
            None => {
                self.aggregates.push(agg);
                self.aggregates.len() - 1
            }
        };
        Ok(Expr::Agg(idx))
    }
}
