//! Switchboard's shared shapes: the names of NectarDesk events, the records that travel
//! through Kafka (with their Avro schemas and codec). The ClickHouse storage model is in
//! the `warehouse` crate.
//!
//! This crate does no I/O and pulls in no runtime: every other crate depends on it, and it
//! must stay cheap to build and easy to test. Anything that talks to Kafka, ClickHouse or
//! HTTP belongs elsewhere.

pub mod avro;
pub mod erasure;
pub mod event;
pub mod records;

pub use erasure::{Erasure, Subject};
pub use event::{Entity, EventKind};
pub use records::{
    CallAgent, CallRecord, ContactListRecord, ContactRecord, DeadLetter, FieldReport,
    MessageRecord, MistypedField, NormalizedEvent, Position, RawEnvelope, Stage, Status,
    UnmappedField,
};
