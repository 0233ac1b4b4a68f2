//! A mapping compiled against a list of columns, and the row → message step.

use chrono_tz::Tz;
use portrait_core::{Identifier, Message, MessageKind};
use serde_json::{Map, Value};

use crate::cell::Cell;
use crate::mapping::{Mapping, TimestampFormat, ValueType};
use crate::RowContext;

/// The `context` of every imported message.
const CONTEXT: &str = r#"{"library":{"name":"portrait-import"}}"#;

/// A mapping with every column reference turned into an index into [`Plan::columns`].
/// Sources deliver, for each row, one [`Cell`] per entry of `columns`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Distinct columns the mapping reads, in first-mention order.
    pub(crate) columns: Vec<String>,
    kind: MessageKind,
    event: Option<Event>,
    identifiers: Vec<IdPlan>,
    timestamp: Option<(usize, TimestampFormat, Tz)>,
    traits: Vec<(String, usize, ValueType)>,
    properties: Vec<(String, usize, ValueType)>,
    message_id: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Event {
    Literal(String),
    Column(usize),
}

#[derive(Debug, Clone)]
enum Scope {
    None,
    Literal(String),
    Column(usize),
}

#[derive(Debug, Clone)]
struct IdPlan {
    kind: String,
    column: usize,
    scope: Scope,
}

impl Plan {
    pub(crate) fn new(mapping: &Mapping) -> Self {
        let mut columns: Vec<String> = Vec::new();
        let mut col = |name: &str| match columns.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                columns.push(name.to_string());
                columns.len() - 1
            }
        };
        let event = match (&mapping.event, &mapping.event_column) {
            (Some(e), _) => Some(Event::Literal(e.trim().to_string())),
            (None, Some(c)) => Some(Event::Column(col(c))),
            (None, None) => None,
        };
        let identifiers = mapping
            .identifiers
            .iter()
            .map(|(kind, id)| IdPlan {
                kind: kind.clone(),
                column: col(&id.column),
                scope: match (&id.scope, &id.scope_column) {
                    (Some(s), _) => Scope::Literal(s.clone()),
                    (None, Some(c)) => Scope::Column(col(c)),
                    (None, None) => Scope::None,
                },
            })
            .collect();
        let timestamp = mapping
            .timestamp
            .as_ref()
            .map(|t| (col(&t.column), t.format.clone(), t.timezone));
        let mut fields = |list: &[(String, crate::mapping::FieldColumn)]| {
            list.iter()
                .map(|(name, f)| (name.clone(), col(&f.column), f.value_type))
                .collect()
        };
        let traits = fields(&mapping.traits);
        let properties = fields(&mapping.properties);
        let message_id = mapping.message_id.iter().map(|c| col(c)).collect();
        let kind = mapping.kind.message_kind();
        Self {
            columns,
            kind,
            event,
            identifiers,
            timestamp,
            traits,
            properties,
            message_id,
        }
    }

    /// Builds the message for one row, or says everything that is wrong with it.
    pub(crate) fn build(&self, cells: &[Cell], ctx: &RowContext) -> Result<Message, String> {
        debug_assert_eq!(cells.len(), self.columns.len());
        let mut errors: Vec<String> = Vec::new();
        let name = |i: usize| self.columns[i].as_str();

        let event = match &self.event {
            None => None,
            Some(Event::Literal(e)) => Some(e.clone()),
            Some(Event::Column(i)) => match cells[*i].text() {
                Some(e) => Some(e.trim().to_string()),
                None => {
                    errors.push(format!("event column `{}` is empty", name(*i)));
                    None
                }
            },
        };

        let ids = self.identifiers(cells, ctx, &mut errors);

        let timestamp = match &self.timestamp {
            None => None,
            Some((i, format, tz)) => match cells[*i].timestamp(format, *tz) {
                Ok(ms) => Some(ms),
                Err(why) => {
                    errors.push(format!("timestamp column `{}`: {why}", name(*i)));
                    None
                }
            },
        };

        let mut object = |fields: &[(String, usize, ValueType)]| {
            let mut out = Map::new();
            for (key, i, ty) in fields {
                match cells[*i].typed(*ty) {
                    Ok(Some(v)) => {
                        out.insert(key.clone(), v);
                    }
                    Ok(None) => {}
                    Err(why) => errors.push(format!("column `{}`: {why}", name(*i))),
                }
            }
            Value::Object(out).to_string()
        };
        let traits = object(&self.traits);
        let properties = object(&self.properties);

        let mut id_parts = Vec::with_capacity(self.message_id.len());
        for &i in &self.message_id {
            match cells[i].text() {
                Some(v) => id_parts.push(v.trim().to_string()),
                None => errors.push(format!("message_id column `{}` is empty", name(i))),
            }
        }

        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let message_id = if self.message_id.is_empty() {
            self.content_id(event.as_deref(), timestamp, &ids, &traits, &properties)
        } else {
            format!("import:{}", id_parts.join(":"))
        };
        let first = |kind: &str| {
            ids.iter()
                .find(|id| id.kind == kind)
                .map(|id| id.value.clone())
        };
        Ok(Message {
            kind: self.kind,
            message_id,
            source: ctx.source,
            event,
            user_id: first("user_id"),
            anonymous_id: first("anonymous_id"),
            previous_id: None,
            group_id: None,
            timestamp: timestamp.unwrap_or(ctx.received_at),
            received_at: ctx.received_at,
            sent_at: None,
            original_timestamp: None,
            traits,
            properties,
            context: CONTEXT.to_string(),
            identifiers: ids,
        })
    }

    /// Normalised identifiers, in priority order; records an error when none is usable.
    fn identifiers(
        &self,
        cells: &[Cell],
        ctx: &RowContext,
        errors: &mut Vec<String>,
    ) -> Vec<Identifier> {
        let mut ids = Vec::new();
        let mut dropped = Vec::new();
        for id in &self.identifiers {
            let column = &self.columns[id.column];
            let cell = &cells[id.column];
            let Some(raw) = cell.text() else { continue };
            if cell.is_nested() {
                dropped.push(format!(
                    "{} `{raw}` (column `{column}`): not a single value",
                    id.kind
                ));
                continue;
            }
            let scope = match &id.scope {
                Scope::None => None,
                Scope::Literal(s) => Some(s.as_str().into()),
                Scope::Column(i) => cells[*i].text(),
            };
            match ctx.config.identifier(&id.kind, &raw, scope.as_deref()) {
                Ok(identifier) => ids.push(identifier),
                Err(why) => dropped.push(format!("{} `{raw}` (column `{column}`): {why}", id.kind)),
            }
        }
        ctx.config.sort(&mut ids);
        if ids.is_empty() {
            if dropped.is_empty() {
                let columns: Vec<String> = self
                    .identifiers
                    .iter()
                    .map(|i| format!("`{}`", self.columns[i.column]))
                    .collect();
                errors.push(format!(
                    "no usable identifier: identifier columns {} are empty",
                    columns.join(", ")
                ));
            } else {
                errors.push(format!("no usable identifier: {}", dropped.join(", ")));
            }
        }
        ids
    }

    /// `import:h-<xxh3-128>` of the row's mapped content: the same row always gives the same id
    /// (the import time is left out), any changed mapped value gives another.
    fn content_id(
        &self,
        event: Option<&str>,
        timestamp: Option<i64>,
        ids: &[Identifier],
        traits: &str,
        properties: &str,
    ) -> String {
        let mut buf = Vec::with_capacity(128 + traits.len() + properties.len());
        let mut part = |bytes: &[u8]| {
            buf.extend_from_slice(bytes);
            buf.push(0xff); // never part of UTF-8 text: an unambiguous separator
        };
        part(self.kind.as_str().as_bytes());
        part(event.unwrap_or_default().as_bytes());
        part(
            timestamp
                .map(|t| t.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        part(ids.len().to_string().as_bytes());
        for id in ids {
            part(id.to_string().as_bytes());
        }
        part(traits.as_bytes());
        part(properties.as_bytes());
        format!("import:h-{:032x}", xxhash_rust::xxh3::xxh3_128(&buf))
    }
}
