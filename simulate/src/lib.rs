//! `simulate`: realistic NectarDesk traffic for one call center, for demos and tests.
//!
//! - `simulate send` posts it to an ingest URL as the platform would (one request per
//!   event, retries on 5xx and connection errors, duplicates, late retries), first a
//!   backfill of past hours as fast as ingest takes it, then in real time;
//! - `simulate rows` writes the ClickHouse rows the same traffic becomes (through the real
//!   normalization and row mapping), for testing dashboards and queries without a broker.

pub mod emit;
pub mod send;
pub mod traffic;

pub use traffic::{Delivery, Generator, Scenario};
