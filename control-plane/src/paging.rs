//! Lists in pages: `?limit=&cursor=` in, `{"items", "next_cursor"}` out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items (default 50, at most 500).
    #[serde(default, deserialize_with = "page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub const DEFAULT: i64 = 50;
    pub const MAX: i64 = 500;

    /// The page size asked for; `page_limit` has checked its range.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(Self::DEFAULT)
    }
}

/// `limit` of a list: 1 to [`PageQuery::MAX`]. Out of range is refused (422
/// naming `limit`) rather than clamped, so a client learns its mistake.
pub fn page_limit<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    let limit = Option::<i64>::deserialize(de)?;
    match limit {
        Some(n) if !(1..=PageQuery::MAX).contains(&n) => Err(serde::de::Error::custom(format!(
            "must be between 1 and {}",
            PageQuery::MAX
        ))),
        _ => Ok(limit),
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A whole list in one page.
    pub fn all(items: Vec<T>) -> Self {
        Page {
            items,
            next_cursor: None,
        }
    }
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only
    /// tells that there is a next page.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
