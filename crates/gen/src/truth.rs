//! Ground truth and identity-resolution scoring.
//!
//! `generate` writes, under `out/truth/`:
//! - `identifiers.csv` — `type,value,scope,person_id,component`: every identifier value as
//!   written in some source file (phone format variants, masked phones, blocked placeholders
//!   included), the hidden person it belongs to, and its *component*: identifiers of one person
//!   with the same component are connected through that person's own records (two values that
//!   appeared together in one row, transitively). Different components of one person cannot
//!   be joined from the data by any resolver (e.g. a Tmall nick whose every order had a masked
//!   phone).
//! - `people.csv` — the person's persona and the facts tags should recover (orders, revenue,
//!   last order, top category, sensitive skin, reactivated after a campaign, …).
//! - `records.csv` — `source,record_id,person_id`: every source record (its import message id
//!   without the `import:` prefix, or the Segment `messageId`) and whose it is.
//!
//! [`score`] compares a resolver's answer (a lookup from normalised identifier to profile id)
//! with the truth, using pair counting on the (person × profile) contingency table so it runs
//! in time linear in the number of identifiers.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use portrait_core::{Identifier, IdentityConfig};

use crate::GenError;

/// One row of `truth/identifiers.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthIdentifier {
    /// Identifier type (`phone`, `wechat_openid`, …).
    pub kind: String,
    /// The raw value as written in the source file.
    pub value: String,
    /// Scope for scoped types (the WeChat app id of an openid); empty otherwise.
    pub scope: String,
    /// Hidden person id.
    pub person: u64,
    /// Linkable component within the person (see the module docs).
    pub component: u32,
}

/// How well identity resolution recovered the hidden people.
///
/// Pairs are unordered pairs of distinct normalised identifiers. A pair is *true* when both
/// belong to the same person, *predicted* when the resolver put both in one profile, and
/// *correct* when both. Identifiers that truly belong to more than one person (a family's
/// shared phone, QA's test number) are ambiguous: they are left out of every pair and counted
/// in `ambiguous_identifiers`. Values that do not normalise (masked or mistyped phones,
/// `undefined`) are not identifiers and are counted in `unusable_values`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityScore {
    /// correct / predicted (1 when nothing was predicted).
    pub precision: f64,
    /// correct / true (1 when there is no true pair).
    pub recall: f64,
    /// Pairs of identifiers of the same person.
    pub true_pairs: u64,
    /// Pairs of identifiers in the same profile.
    pub predicted_pairs: u64,
    /// Pairs both true and predicted.
    pub correct_pairs: u64,
    /// People with at least one scored identifier.
    pub people: u64,
    /// Profiles holding scored identifiers (an identifier the resolver does not know counts
    /// as a profile of its own).
    pub profiles: u64,
    /// Profiles holding identifiers of more than one person.
    pub over_merged_profiles: u64,
    /// People whose identifiers are spread over more than one profile.
    pub under_merged_people: u64,
    /// Normalised identifiers belonging to more than one person (excluded from pairs).
    pub ambiguous_identifiers: u64,
    /// Distinct normalised identifiers scored.
    pub identifiers: u64,
    /// Truth rows whose value is not an identifier after normalisation (masked, blocked, typo).
    pub unusable_values: u64,
    /// Scored identifiers the resolver does not know.
    pub unresolved_identifiers: u64,
    /// True pairs whose identifiers are connected through the person's own records: the
    /// pairs a resolver can find from the data.
    pub linkable_pairs: u64,
    /// Linkable pairs that are predicted.
    pub linkable_correct_pairs: u64,
    /// linkable_correct / linkable (1 when there is no linkable pair).
    pub linkable_recall: f64,
}

impl fmt::Display for IdentityScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "precision        {:.5}  ({} correct of {} predicted pairs)",
            self.precision, self.correct_pairs, self.predicted_pairs
        )?;
        writeln!(
            f,
            "recall           {:.5}  ({} correct of {} true pairs)",
            self.recall, self.correct_pairs, self.true_pairs
        )?;
        writeln!(
            f,
            "linkable recall  {:.5}  ({} of {} pairs linked in the data)",
            self.linkable_recall, self.linkable_correct_pairs, self.linkable_pairs
        )?;
        writeln!(
            f,
            "people {}  profiles {}  over-merged profiles {}  under-merged people {}",
            self.people, self.profiles, self.over_merged_profiles, self.under_merged_people
        )?;
        write!(
            f,
            "identifiers {}  ambiguous {}  unusable values {}  unresolved {}",
            self.identifiers,
            self.ambiguous_identifiers,
            self.unusable_values,
            self.unresolved_identifiers
        )
    }
}

fn key(id: &Identifier) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(id.kind.as_bytes());
    h.update(&[0]);
    h.update(id.value.as_bytes());
    h.digest128()
}

struct Entry {
    person: u64,
    component: u32,
    ambiguous: bool,
    done: bool,
}

/// Two-pass scorer: pass 1 learns which person owns each normalised identifier, pass 2 asks
/// the resolver once per identifier and fills the contingency counts.
struct Scorer<'a> {
    config: &'a IdentityConfig,
    owners: HashMap<u128, Entry>,
    unusable: u64,
    /// (person, profile) → identifiers.
    cells: HashMap<(u64, u64), u64>,
    /// (person, component, profile) → identifiers.
    comp_cells: HashMap<(u64, u32, u64), u64>,
    /// person → identifiers.
    persons: HashMap<u64, u64>,
    /// (person, component) → identifiers.
    comps: HashMap<(u64, u32), u64>,
    /// profile → (identifiers, first person, several people).
    profiles: HashMap<u64, (u64, u64, bool)>,
    unresolved: u64,
}

impl<'a> Scorer<'a> {
    fn new(config: &'a IdentityConfig) -> Self {
        Self {
            config,
            owners: HashMap::new(),
            unusable: 0,
            cells: HashMap::new(),
            comp_cells: HashMap::new(),
            persons: HashMap::new(),
            comps: HashMap::new(),
            profiles: HashMap::new(),
            unresolved: 0,
        }
    }

    fn normalise(&self, row: &TruthIdentifier) -> Option<Identifier> {
        let scope = (!row.scope.is_empty()).then_some(row.scope.as_str());
        self.config.identifier(&row.kind, &row.value, scope).ok()
    }

    fn learn(&mut self, row: &TruthIdentifier) {
        let Some(id) = self.normalise(row) else {
            self.unusable += 1;
            return;
        };
        let e = self.owners.entry(key(&id)).or_insert(Entry {
            person: row.person,
            component: row.component,
            ambiguous: false,
            done: false,
        });
        if e.person != row.person {
            e.ambiguous = true;
        } else {
            e.component = e.component.min(row.component);
        }
    }

    fn ask(&mut self, row: &TruthIdentifier, lookup: &dyn Fn(&Identifier) -> Option<u32>) {
        let Some(id) = self.normalise(row) else {
            return;
        };
        let Some(e) = self.owners.get_mut(&key(&id)) else {
            return;
        };
        if e.done || e.ambiguous {
            return;
        }
        e.done = true;
        let (person, component) = (e.person, e.component);
        let profile = match lookup(&id) {
            Some(p) => p as u64,
            None => {
                self.unresolved += 1;
                (1u64 << 40) + self.unresolved
            }
        };
        *self.cells.entry((person, profile)).or_default() += 1;
        *self
            .comp_cells
            .entry((person, component, profile))
            .or_default() += 1;
        *self.persons.entry(person).or_default() += 1;
        *self.comps.entry((person, component)).or_default() += 1;
        let p = self.profiles.entry(profile).or_insert((0, person, false));
        p.0 += 1;
        p.2 |= p.1 != person;
    }

    fn finish(self) -> IdentityScore {
        let pairs = |n: u64| n * n.saturating_sub(1) / 2;
        let true_pairs: u64 = self.persons.values().map(|&n| pairs(n)).sum();
        let predicted_pairs: u64 = self.profiles.values().map(|p| pairs(p.0)).sum();
        let correct_pairs: u64 = self.cells.values().map(|&n| pairs(n)).sum();
        let linkable_pairs: u64 = self.comps.values().map(|&n| pairs(n)).sum();
        let linkable_correct_pairs: u64 = self.comp_cells.values().map(|&n| pairs(n)).sum();
        let mut spread: HashMap<u64, u32> = HashMap::new();
        for (person, _) in self.cells.keys() {
            *spread.entry(*person).or_default() += 1;
        }
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        IdentityScore {
            precision: ratio(correct_pairs, predicted_pairs),
            recall: ratio(correct_pairs, true_pairs),
            true_pairs,
            predicted_pairs,
            correct_pairs,
            people: self.persons.len() as u64,
            profiles: self.profiles.len() as u64,
            over_merged_profiles: self.profiles.values().filter(|p| p.2).count() as u64,
            under_merged_people: spread.values().filter(|&&n| n > 1).count() as u64,
            ambiguous_identifiers: self.owners.values().filter(|e| e.ambiguous).count() as u64,
            identifiers: self.owners.values().filter(|e| !e.ambiguous).count() as u64,
            unusable_values: self.unusable,
            unresolved_identifiers: self.unresolved,
            linkable_pairs,
            linkable_correct_pairs,
            linkable_recall: ratio(linkable_correct_pairs, linkable_pairs),
        }
    }
}

/// Scores identity resolution against `out/truth/identifiers.csv`.
///
/// Each truth value is normalised through `config.identifier(type, value, scope)`; values that
/// fail (masked phones, blocked placeholders, typos) are not identifiers and are skipped.
/// `lookup` is asked once per distinct normalised identifier for the profile holding it
/// (`None` when the resolver does not know it).
pub fn score(
    out: &Path,
    config: &IdentityConfig,
    lookup: impl Fn(&Identifier) -> Option<u32>,
) -> Result<IdentityScore, GenError> {
    let path = out.join("truth").join("identifiers.csv");
    let mut scorer = Scorer::new(config);
    for_each_identifier(&path, |row| scorer.learn(&row))?;
    for_each_identifier(&path, |row| scorer.ask(&row, &lookup))?;
    Ok(scorer.finish())
}

/// Scores identity resolution against truth rows held in memory (for tests and callers that
/// build their own truth).
pub fn score_rows(
    rows: &[TruthIdentifier],
    config: &IdentityConfig,
    lookup: impl Fn(&Identifier) -> Option<u32>,
) -> IdentityScore {
    let mut scorer = Scorer::new(config);
    for row in rows {
        scorer.learn(row);
    }
    for row in rows {
        scorer.ask(row, &lookup);
    }
    scorer.finish()
}

/// Streams the rows of a `truth/identifiers.csv` file.
pub fn for_each_identifier(
    path: &Path,
    mut f: impl FnMut(TruthIdentifier),
) -> Result<(), GenError> {
    let io = |e: std::io::Error| GenError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(std::io::BufReader::new(file));
    let mut record = csv::StringRecord::new();
    let bad = |line: u64, message: String| GenError::Truth {
        path: path.to_path_buf(),
        line,
        message,
    };
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(bad(line, e.to_string()));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() < 4 {
            return Err(bad(
                line,
                format!("expected at least 4 fields, found {}", record.len()),
            ));
        }
        let person = record[3]
            .parse()
            .map_err(|_| bad(line, format!("bad person id `{}`", &record[3])))?;
        let component = match record.get(4) {
            Some(c) if !c.is_empty() => c
                .parse()
                .map_err(|_| bad(line, format!("bad component `{c}`")))?,
            _ => 0,
        };
        f(TruthIdentifier {
            kind: record[0].to_string(),
            value: record[1].to_string(),
            scope: record[2].to_string(),
            person,
            component,
        });
    }
    Ok(())
}

/// One row of `truth/people.csv`: the hidden person and facts tags should recover.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct TruthPerson {
    /// Hidden person id.
    pub person_id: u64,
    /// Persona: prospect, new, casual, loyal, bargain_hunter, high_arpu_vip, sensitive_skin,
    /// dormant, churning or test_account.
    pub persona: String,
    /// Person whose phone this person shares (household head), if any.
    pub household: Option<u64>,
    /// female, male or unknown.
    pub gender: String,
    /// Birthday (`YYYY-MM-DD`).
    pub birthday: String,
    /// City.
    pub city: String,
    /// Whether the person is a CRM member (`1`/`0`).
    pub member: u8,
    /// First day with own activity in the window (empty when none).
    pub first_active: String,
    /// Last day with own activity in the window.
    pub last_active: String,
    /// Orders in the window (refunded ones excluded).
    pub orders: u64,
    /// Revenue in yuan of those orders.
    pub revenue: f64,
    /// Discount as a share of list price over those orders (0–1).
    pub discount_rate: f64,
    /// Day of the last order.
    pub last_order: String,
    /// Category bought most often.
    pub top_category: String,
    /// Sensitive-skin person (persona, or bought the sensitive line at least twice).
    pub sensitive_skin: u8,
    /// Bought again after a win-back campaign following dormancy.
    pub reactivated: u8,
    /// Channels bought through (`tmall|pos|…`).
    pub purchase_channels: String,
}

/// Reads `out/truth/people.csv`.
pub fn people(out: &Path) -> Result<Vec<TruthPerson>, GenError> {
    let path = out.join("truth").join("people.csv");
    let file = std::fs::File::open(&path).map_err(|e| GenError::Io {
        path: path.clone(),
        source: e,
    })?;
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    reader
        .deserialize()
        .map(|r| {
            r.map_err(|e: csv::Error| GenError::Truth {
                path: path.clone(),
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, value: &str, person: u64) -> TruthIdentifier {
        TruthIdentifier {
            kind: kind.into(),
            value: value.into(),
            scope: String::new(),
            person,
            component: 0,
        }
    }

    #[test]
    fn pair_counts() {
        let config = IdentityConfig::default();
        let rows = vec![
            row("phone", "13900000001", 1),
            row("phone", "+86 139-0000-0001", 1),
            row("member_id", "M1", 1),
            row("email", "a@qq.com", 1),
            row("phone", "13900000002", 2),
            row("member_id", "M2", 2),
            row("phone", "139****0002", 2),
        ];
        let perfect = score_rows(&rows, &config, |id| {
            Some(if id.value.ends_with('1') || id.value == "a@qq.com" {
                1
            } else {
                2
            })
        });
        assert_eq!((perfect.precision, perfect.recall), (1.0, 1.0));
        assert_eq!(perfect.true_pairs, 3 + 1);
        assert_eq!(perfect.unusable_values, 1);
        assert_eq!(perfect.identifiers, 5);
        let lumped = score_rows(&rows, &config, |_| Some(0));
        assert_eq!(lumped.predicted_pairs, 10);
        assert!((lumped.precision - 0.4).abs() < 1e-9);
        assert_eq!(lumped.over_merged_profiles, 1);
        let split = score_rows(&rows, &config, |_| None);
        assert_eq!(split.recall, 0.0);
        assert_eq!(split.under_merged_people, 2);
        assert_eq!(split.unresolved_identifiers, 5);
    }
}
