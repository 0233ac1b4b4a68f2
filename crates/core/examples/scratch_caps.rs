//! temporary
use portrait_core::{Identifier, IdentityConfig, Message, MessageKind, ProfileBook};
fn m(n: u64, ids: Vec<Identifier>) -> Message {
    Message {
        kind: MessageKind::Identify,
        message_id: format!("m{n}"),
        source: 1,
        event: None,
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: 0,
        received_at: 0,
        sent_at: None,
        original_timestamp: None,
        traits: "{}".into(),
        properties: "{}".into(),
        context: "{}".into(),
        identifiers: ids,
    }
}
fn main() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let (u, p, a) = (
        Identifier::new("user_id", "C000000001"),
        Identifier::new("phone", "+8613000000001"),
        Identifier::new("anonymous_id", "0123"),
    );
    book.apply(&m(0, vec![a.clone()]), 0);
    book.apply(&m(1, vec![u.clone(), a.clone()]), 1);
    book.apply(&m(2, vec![u.clone(), p.clone()]), 2);
    book.apply(&m(3, vec![u.clone(), p.clone(), a.clone()]), 3);
    for pr in book.profiles() {
        println!(
            "ids len {} cap {}; events cap {}; sources {}; traits {}; history {}; merged_from {}",
            pr.identifiers.len(),
            pr.identifiers.capacity(),
            pr.events.capacity(),
            pr.sources.len(),
            pr.traits.len(),
            pr.history.len(),
            pr.merged_from.len()
        );
        for i in &pr.identifiers {
            println!(
                "  {} kind cap {} value cap {}",
                i,
                i.kind.capacity(),
                i.value.capacity()
            );
        }
    }
}
