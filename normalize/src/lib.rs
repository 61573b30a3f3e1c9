//! Pure normalization of NectarDesk webhooks: what each raw record becomes.
//!
//! Nothing here does I/O or needs an async runtime, Kafka, ClickHouse or HTTP: the
//! `transform` service (live and `replay`), `ingest` (event ids and keys) and the
//! simulator call into it, and the tests drive it with plain values. Normalization never
//! fails and never panics: whatever the sender sent becomes a [`NormalizedEvent`] whose
//! status says what could be made of it, and [`process`] decides what is dead-lettered.
//! A normalized event also reports what of its body nothing read (`discovery`), and
//! [`process`] redacts what is about a person on the erasure list it is given
//! (`erasure`) before anything leaves.

mod call;
pub mod canonical;
mod contact;
pub mod discovery;
pub mod entity;
pub mod erasure;
pub mod identity;
mod lenient;
mod message;
mod normalize;
mod outcome;

pub use erasure::{Erasures, Subjects};
pub use normalize::normalize;
pub use outcome::{process, process_record, Encoded, Outcome};
pub use schemas::{NormalizedEvent, RawEnvelope};
