//! A target's schema as text: what introspection reads from the catalogs
//! (`crate::targets::introspect`), rendered canonically — one block per
//! object, sorted, nothing volatile — with a hash, and the difference
//! between two such texts by object.
//!
//! The text is DDL-like, meant for people and for diffs:
//!
//! ```text
//! table public.accounts
//!   column id bigint not null generated always as identity
//!   column email text not null
//!   constraint accounts_pkey PRIMARY KEY (id)
//!   index CREATE UNIQUE INDEX accounts_email_idx ON public.accounts USING btree (email)
//!
//! view public.active_accounts
//!    SELECT accounts.id FROM accounts WHERE …
//! ```
//!
//! Each block starts with `kind name` at the margin; its lines are indented
//! by two spaces. Two schemas are the same exactly when their texts are.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use similar::TextDiff;

/// One object of a schema: its kind (`table`, `view`, `function`, …), its
/// qualified name, and its definition lines (without indentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub lines: Vec<String>,
}

impl Object {
    pub fn new(kind: impl Into<String>, name: impl Into<String>, body: &str) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            lines: body
                .lines()
                .map(|l| l.trim_end().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }
}

/// The rank of each kind in the text: what others depend on first.
const KIND_ORDER: [&str; 12] = [
    "extension",
    "schema",
    "type",
    "domain",
    "sequence",
    "table",
    "view",
    "materialized view",
    "function",
    "procedure",
    "trigger",
    "event",
];

fn rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// A rendered schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub text: String,
    /// `sha256:` and the hex digest of `text`.
    pub hash: String,
    pub objects: usize,
}

/// Renders objects canonically: sorted by kind and name, one block each,
/// blocks separated by a blank line.
pub fn render(mut objects: Vec<Object>) -> Schema {
    objects
        .sort_by(|a, b| (rank(&a.kind), &a.kind, &a.name).cmp(&(rank(&b.kind), &b.kind, &b.name)));
    objects.dedup_by(|a, b| a.kind == b.kind && a.name == b.name);
    let mut text = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&object.kind);
        text.push(' ');
        text.push_str(&object.name);
        text.push('\n');
        for line in &object.lines {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    Schema {
        hash: hash(&text),
        objects: objects.len(),
        text,
    }
}

/// The hash of a rendered schema.
pub fn hash(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The blocks of a rendered schema by their header (`kind name`).
fn blocks(text: &str) -> BTreeMap<&str, String> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(&str, String)> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("  ") {
            if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        } else {
            if let Some((header, body)) = current.take() {
                blocks.insert(header, body);
            }
            current = Some((line, String::new()));
        }
    }
    if let Some((header, body)) = current {
        blocks.insert(header, body);
    }
    blocks
}

/// How two schemas differ, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaDiff {
    /// `kind name` of objects only the second has.
    pub added: Vec<String>,
    /// `kind name` of objects only the first has.
    pub removed: Vec<String>,
    /// `kind name` of objects both have, defined differently.
    pub changed: Vec<String>,
    /// A unified diff of the two texts (`---` before, `+++` after).
    pub unified: String,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference from `before` to `after` (rendered schemas).
pub fn diff(before: &str, after: &str) -> SchemaDiff {
    let (old, new) = (blocks(before), blocks(after));
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .map(|k| k.to_string())
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| k.to_string())
        .collect();
    let changed = old
        .iter()
        .filter(|(k, body)| new.get(*k).is_some_and(|b| b != *body))
        .map(|(k, _)| k.to_string())
        .collect();
    let unified = if before == after {
        String::new()
    } else {
        TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header("before", "after")
            .to_string()
    };
    SchemaDiff {
        added,
        removed,
        changed,
        unified,
    }
}

/// The blocks of a rendered schema that mention `needle` (any case), in
/// order; all of them for an empty needle.
pub fn filter(text: &str, needle: &str) -> String {
    let needle = needle.trim().to_lowercase();
    if needle.is_empty() {
        return text.to_owned();
    }
    text.split("\n\n")
        .filter(|block| block.to_lowercase().contains(&needle))
        .map(|block| block.trim_end_matches('\n'))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One target of a DB set as fleet consistency sees it: the version it is
/// at and the hash of its newest snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember<Id> {
    pub id: Id,
    pub version: Option<String>,
    pub hash: Option<String>,
}

/// The targets at one version that share one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaGroup<Id> {
    pub version: Option<String>,
    pub hash: String,
    pub members: Vec<Id>,
    /// The largest group at its version (ties: the hash first in order),
    /// which the others are compared with.
    pub majority: bool,
}

/// Groups a DB set's targets by schema, within each version only (targets
/// at different versions are expected to differ): per version, the groups
/// largest first. Targets without a snapshot are left out.
pub fn fleet_groups<Id: Clone + Ord>(members: &[FleetMember<Id>]) -> Vec<SchemaGroup<Id>> {
    let mut by_key: BTreeMap<(Option<String>, String), Vec<Id>> = BTreeMap::new();
    for m in members {
        if let Some(hash) = &m.hash {
            by_key
                .entry((m.version.clone(), hash.clone()))
                .or_default()
                .push(m.id.clone());
        }
    }
    let mut groups: Vec<SchemaGroup<Id>> = by_key
        .into_iter()
        .map(|((version, hash), mut members)| {
            members.sort();
            SchemaGroup {
                version,
                hash,
                members,
                majority: false,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        (&a.version, std::cmp::Reverse(a.members.len()), &a.hash).cmp(&(
            &b.version,
            std::cmp::Reverse(b.members.len()),
            &b.hash,
        ))
    });
    let mut seen: Option<Option<String>> = None;
    for g in &mut groups {
        if seen.as_ref() != Some(&g.version) {
            g.majority = true;
            seen = Some(g.version.clone());
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, columns: &[&str]) -> Object {
        Object::new("table", name, &columns.join("\n"))
    }

    #[test]
    fn rendering_is_sorted_and_does_not_depend_on_the_order_read() {
        let a = vec![
            table("public.b", &["column id int"]),
            Object::new("view", "public.v", " SELECT 1;\n"),
            table("public.a", &["column id int", "column note text"]),
            Object::new("extension", "pgcrypto", "version 1.3"),
        ];
        let mut b = a.clone();
        b.reverse();
        let (ra, rb) = (render(a), render(b));
        assert_eq!(ra, rb);
        assert_eq!(ra.objects, 4);
        assert_eq!(
            ra.text,
            "extension pgcrypto\n  version 1.3\n\ntable public.a\n  column id int\n  column note \
             text\n\ntable public.b\n  column id int\n\nview public.v\n   SELECT 1;\n"
        );
        assert!(ra.hash.starts_with("sha256:") && ra.hash.len() == 71);
    }

    #[test]
    fn any_difference_changes_the_hash() {
        let one = render(vec![table("public.a", &["column id int"])]);
        let other = render(vec![table("public.a", &["column id bigint"])]);
        assert_ne!(one.hash, other.hash);
    }

    #[test]
    fn the_diff_names_objects_added_removed_and_changed() {
        let before = render(vec![
            table("public.a", &["column id int"]),
            table("public.gone", &["column id int"]),
        ]);
        let after = render(vec![
            table("public.a", &["column id int", "column note text"]),
            Object::new(
                "index",
                "public.a_idx",
                "CREATE INDEX a_idx ON public.a (id)",
            ),
        ]);
        let d = diff(&before.text, &after.text);
        assert_eq!(d.added, ["index public.a_idx"]);
        assert_eq!(d.removed, ["table public.gone"]);
        assert_eq!(d.changed, ["table public.a"]);
        assert!(d.unified.contains("+  column note text"), "{}", d.unified);
        assert!(
            d.unified.starts_with("--- before\n+++ after\n"),
            "{}",
            d.unified
        );
        assert!(diff(&before.text, &before.text).is_empty());
        assert_eq!(diff(&before.text, &before.text).unified, "");
    }

    #[test]
    fn filtering_keeps_whole_blocks_that_mention_the_needle() {
        let schema = render(vec![
            table("public.accounts", &["column email text"]),
            table("public.orders", &["column total numeric"]),
            Object::new("view", "public.rich", "SELECT total FROM orders"),
        ]);
        assert_eq!(
            filter(&schema.text, "TOTAL"),
            "table public.orders\n  column total numeric\n\nview public.rich\n  SELECT total FROM orders"
        );
        assert_eq!(filter(&schema.text, " "), schema.text);
        assert_eq!(filter(&schema.text, "nothing"), "");
    }

    #[test]
    fn fleet_groups_compare_within_a_version_and_lead_with_the_majority() {
        let m = |id: u32, v: &str, h: Option<&str>| FleetMember {
            id,
            version: Some(v.to_owned()),
            hash: h.map(str::to_owned),
        };
        let groups = fleet_groups(&[
            m(1, "2", Some("a")),
            m(2, "2", Some("b")),
            m(3, "2", Some("a")),
            m(4, "2", Some("a")),
            m(5, "1", Some("old")),
            m(6, "2", None),
        ]);
        let summary: Vec<(Option<&str>, &str, Vec<u32>, bool)> = groups
            .iter()
            .map(|g| {
                (
                    g.version.as_deref(),
                    g.hash.as_str(),
                    g.members.clone(),
                    g.majority,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("1"), "old", vec![5], true),
                (Some("2"), "a", vec![1, 3, 4], true),
                (Some("2"), "b", vec![2], false),
            ]
        );
    }
}
