//! The memory budget: how many bytes of request bodies ingest holds at once, from the
//! first byte read until the delivery is answered.
//!
//! A delivery's bytes are charged as they arrive, three times: once for the body, once
//! for its copy on the way to durability (the encoded record, which Kafka's client or the
//! spool holds while ingest waits; the body itself is let go before that wait), and once
//! for the buffer being grown while the body is read or its record encoded (a growing
//! buffer holds its old and its new allocation for a moment). A charge never waits: when
//! the budget is spent, the delivery is answered 503 at once, so deliveries never hold
//! part of the budget while waiting for more (which could leave them all waiting).
//! Parsing gets a pool of its own: it is brief and never waits for anything else, so
//! waiting for that pool is safe.
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Copies of a body ingest may hold while handling it (see the module docs).
pub const COPIES: usize = 3;

/// The budget for bodies, and the pool for parsing them.
#[derive(Debug, Clone)]
pub struct Budget {
    bodies: Arc<Semaphore>,
    body_bytes: usize,
    parsing: Arc<Semaphore>,
    parse_bytes: usize,
}

/// Bytes a delivery holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    bodies: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The budget for bodies is spent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("memory budget for bodies spent")]
pub struct OverBudget;

impl Budget {
    /// `body_bytes` for bodies (with their copies), `parse_bytes` for parsing.
    pub fn new(body_bytes: usize, parse_bytes: usize) -> Budget {
        Budget {
            bodies: Arc::new(Semaphore::new(body_bytes)),
            body_bytes,
            parsing: Arc::new(Semaphore::new(parse_bytes)),
            parse_bytes,
        }
    }

    /// A charge of nothing yet.
    pub fn charge(&self) -> Charge {
        Charge {
            bodies: self.bodies.clone(),
            permit: None,
        }
    }

    /// Waits for `bytes` of the parsing pool (all of it when `bytes` is more).
    pub async fn parsing(&self, bytes: usize) -> OwnedSemaphorePermit {
        let bytes = bytes.clamp(1, self.parse_bytes);
        self.parsing
            .clone()
            .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await
            .expect("the parsing pool is never closed")
    }

    /// Bytes of the body budget held right now.
    pub fn held(&self) -> usize {
        self.body_bytes - self.bodies.available_permits()
    }
}

impl Charge {
    /// Charges another `bytes` of body, with room for its copies; refuses at once when the
    /// budget has no room.
    pub fn grow(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let bytes = bytes.saturating_mul(COPIES);
        if bytes == 0 {
            return Ok(());
        }
        let more = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.bodies.clone().try_acquire_many_owned(n).ok())
            .ok_or(OverBudget)?;
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }

    /// Bytes held (copies included).
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_once_the_budget_is_spent_and_given_back_when_dropped() {
        let budget = Budget::new(50 * COPIES, 10);
        let mut first = budget.charge();
        first.grow(15).unwrap();
        assert_eq!(first.bytes(), 15 * COPIES);
        let mut second = budget.charge();
        assert_eq!(second.grow(36), Err(OverBudget));
        second.grow(35).unwrap();
        assert_eq!(budget.held(), 50 * COPIES);
        drop(first);
        assert_eq!(budget.held(), 35 * COPIES);
        second.grow(15).unwrap();
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn parsing_more_than_the_pool_takes_the_whole_pool() {
        let budget = Budget::new(100, 10);
        let whole = budget.parsing(1_000).await;
        assert_eq!(whole.num_permits(), 10);
        let wait = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, budget.parsing(1)).await.is_err());
        drop(whole);
        drop(budget.parsing(1).await);
    }
}
