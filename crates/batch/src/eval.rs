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
        expr.walk(&mut |e| match e {
            Expr::Agg(_) | Expr::Tag(_) | Expr::Trait { .. } | Expr::Profile(_) => {
                r.profile_scope = true
            }
            Expr::Event(EventField::Name) => r.name = true,
            Expr::Event(EventField::Type) => r.kind = true,
            Expr::Event(EventField::Source) => r.source = true,
            Expr::Event(EventField::Timestamp) => r.timestamp = true,
            Expr::Property { .. } => r.props = true,
            _ => {}
        });
        r
    }

    /// Number of dictionary columns (`event`, `type`, `source`) read.
    pub fn dict_fields(&self) -> usize {
        usize::from(self.name) + usize::from(self.kind) + usize::from(self.source)
    }
}
