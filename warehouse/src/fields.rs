//! The rows of `unmapped_fields_store`: one per path of a delivery's field report (what
//! the body holds that normalization did not read, or read with another JSON type than
//! expected; see the `normalize` crate's `discovery`).

use serde::Serialize;

use schemas::FieldReport;

/// A row of `unmapped_fields_store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct UnmappedFieldRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    /// Unix seconds.
    pub received_at: u32,
    pub received_at_ms: u64,
    /// `unmapped` or `mistyped`.
    pub kind: String,
    /// The path, array indexes collapsed: `agents[].skill`.
    pub path: String,
    /// For `mistyped`: the JSON kinds the reader expected; empty for `unmapped`.
    pub expected: String,
    /// For `mistyped`: the JSON kind found; empty for `unmapped`.
    pub found: String,
    /// The value as compact JSON, cut to 64 characters.
    pub example: String,
    /// Chosen by the loader once per block (see the other rows).
    pub loaded_at_ms: u64,
}

/// What every row of one delivery shares.
pub(crate) struct Delivery<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) event: &'a str,
    pub(crate) received_at: u32,
    pub(crate) received_at_ms: u64,
}

/// The rows of one delivery's report: unmapped paths first, then mistyped ones.
pub(crate) fn rows(d: &Delivery<'_>, report: FieldReport) -> Vec<UnmappedFieldRow> {
    let row = |kind: &str, path, expected, found, example| UnmappedFieldRow {
        event_id: d.event_id.to_owned(),
        tenant: d.tenant.to_owned(),
        event: d.event.to_owned(),
        received_at: d.received_at,
        received_at_ms: d.received_at_ms,
        kind: kind.to_owned(),
        path,
        expected,
        found,
        example,
        loaded_at_ms: 0,
    };
    let unmapped = report
        .unmapped
        .into_iter()
        .map(|f| row("unmapped", f.path, String::new(), String::new(), f.example));
    let mistyped = report
        .mistyped
        .into_iter()
        .map(|f| row("mistyped", f.path, f.expected, f.found, f.example));
    unmapped.chain(mistyped).collect()
}
