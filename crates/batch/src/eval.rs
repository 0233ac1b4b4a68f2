//! What event-scope expressions read, so the kernel can pick a fast path for each conjunct.
//! Evaluation itself is `portrait_tags::eval::eval_event` (the reference semantics).

use portrait_tags::ir::{EventField, Expr};

/// What an event-scope expression reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// `event`.
    pub name: bool,
    /// `type`.
    pub kind: bool,
    /// `source`.
    pub source: bool,
    /// `timestamp`.
    pub timestamp: bool,
    /// Any property.
    pub props: bool,
    /// Something that is not event scope (an aggregate, tag, trait or profile field).
    pub profile_scope: bool,
}

impl ReadSet {
    /// The fields `expr` reads.
    pub fn of(expr: &Expr) -> ReadSet {
        let mut r = ReadSet::default();
        r.visit(expr);
        r
    }

    fn visit(&mut self, e: &Expr) {
        match e {
            Expr::Lit(_) | Expr::AsOf => {}
            Expr::Agg(_) | Expr::Tag(_) | Expr::Trait { .. } | Expr::Profile(_) => {
                self.profile_scope = true
            }
            Expr::Event(f) => match f {
                EventField::Name => self.name = true,
                EventField::Type => self.kind = true,
                EventField::Source => self.source = true,
                EventField::Timestamp => self.timestamp = true,
            },
            Expr::Property { .. } => self.props = true,
            Expr::Not(a) | Expr::Neg(a) => self.visit(a),
            Expr::And(v) | Expr::Or(v) | Expr::Call(_, v) => v.iter().for_each(|x| self.visit(x)),
            Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
                self.visit(a);
                self.visit(b);
            }
            Expr::In { expr, .. } | Expr::IsNull { expr, .. } => self.visit(expr),
            Expr::Between {
                expr, low, high, ..
            } => {
                self.visit(expr);
                self.visit(low);
                self.visit(high);
            }
        }
    }

    /// Number of dictionary columns (`event`, `type`, `source`) read.
    pub fn dict_fields(&self) -> usize {
        usize::from(self.name) + usize::from(self.kind) + usize::from(self.source)
    }
}
