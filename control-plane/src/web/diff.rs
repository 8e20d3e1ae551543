//! Side-by-side line diff of two texts, for comparing migration revisions.

use serde::Serialize;
use similar::{DiffOp, TextDiff};

/// One row of a side-by-side diff. A side is `None` where the other side
/// has lines the first lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub kind: &'static str,
    pub old_no: Option<usize>,
    pub old: Option<String>,
    pub new_no: Option<usize>,
    pub new: Option<String>,
}

fn line(lines: &[&str], i: usize) -> String {
    lines[i].trim_end_matches(['\n', '\r']).to_owned()
}

pub fn side_by_side(old: &str, new: &str) -> Vec<Row> {
    let diff = TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = diff.iter_old_slices().collect();
    let new_lines: Vec<&str> = diff.iter_new_slices().collect();
    let mut rows = Vec::new();
    for op in diff.ops() {
        match *op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for k in 0..len {
                    rows.push(Row {
                        kind: "equal",
                        old_no: Some(old_index + k + 1),
                        old: Some(line(&old_lines, old_index + k)),
                        new_no: Some(new_index + k + 1),
                        new: Some(line(&new_lines, new_index + k)),
                    });
                }
            }
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for k in 0..old_len {
                    rows.push(Row {
                        kind: "delete",
                        old_no: Some(old_index + k + 1),
                        old: Some(line(&old_lines, old_index + k)),
                        new_no: None,
                        new: None,
                    });
                }
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for k in 0..new_len {
                    rows.push(Row {
                        kind: "insert",
                        old_no: None,
                        old: None,
                        new_no: Some(new_index + k + 1),
                        new: Some(line(&new_lines, new_index + k)),
                    });
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for k in 0..old_len.max(new_len) {
                    rows.push(Row {
                        kind: "replace",
                        old_no: (k < old_len).then_some(old_index + k + 1),
                        old: (k < old_len).then(|| line(&old_lines, old_index + k)),
                        new_no: (k < new_len).then_some(new_index + k + 1),
                        new: (k < new_len).then(|| line(&new_lines, new_index + k)),
                    });
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_changed_lines_and_keeps_equal_ones() {
        let rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n");
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["equal", "replace", "equal", "insert"]);
        assert_eq!(rows[1].old.as_deref(), Some("b"));
        assert_eq!(rows[1].new.as_deref(), Some("B"));
        assert_eq!(rows[3].new_no, Some(4));
        assert_eq!(rows[3].old, None);
    }

    #[test]
    fn identical_texts_are_all_equal() {
        assert!(
            side_by_side("x\ny", "x\ny")
                .iter()
                .all(|r| r.kind == "equal")
        );
    }
}
