//! Pure normalization of NectarDesk webhooks: raw envelope in, typed record out.
//!
//! Nothing here does I/O or needs an async runtime, Kafka, ClickHouse or HTTP: the
//! `transform` binary (crate `transform-service`) and `ingest` call into it, and the tests
//! drive it with plain values. Normalization never fails and never panics: whatever the
//! sender sent becomes a [`NormalizedEvent`] whose status says what could be made of it.

mod call;
mod contact;
pub mod identity;
mod lenient;
mod message;
mod normalize;

pub use normalize::normalize;
pub use schemas::{NormalizedEvent, RawEnvelope};
