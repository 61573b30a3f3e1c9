//! Switchboard's storage model: the ClickHouse tables (listed once, in [`Table`]), the row
//! each one takes, the pure mapping from normalized events and dead letters to rows, and
//! the migrations that create the tables, and where they live (one server or a cluster:
//! [`Layout`]).
//!
//! No I/O: the loader writes these rows to ClickHouse; the simulator, the chaos harness
//! and the benchmarks compute them without linking a Kafka or ClickHouse client. The
//! `clickhouse` feature derives the `clickhouse` crate's `Row` for the loader.

pub mod erasure;
pub mod fields;
pub mod layout;
pub mod migrations;
pub mod resolve;
pub mod retention;
pub mod rows;
pub mod states;
pub mod table;

pub use fields::UnmappedFieldRow;
pub use layout::Layout;
pub use rows::{
    CallEventRow, ContactEventRow, ContactListEventRow, DeadLetterRow, MessageEventRow,
    RawEventRow, Tables,
};
pub use table::{StoreRow, Table};
