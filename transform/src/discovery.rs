//! One INFO line the first time the transform sees a path NectarDesk sends that
//! normalization does not read (or reads with another type), per tenant and event: the
//! operator's cue to look at the `unmapped_fields` view and fix the mapping. Example
//! values are not logged: logs are kept outside retention and erasure.

use std::collections::HashSet;

use schemas::NormalizedEvent;

/// The paths already announced, in memory, bounded.
#[derive(Debug)]
pub(crate) struct FirstSeen {
    seen: HashSet<(String, String, &'static str, String)>,
    capacity: usize,
    full: bool,
}

impl FirstSeen {
    /// At most `capacity` paths are remembered; once full, no more lines are logged (the
    /// view keeps counting), so a sender inventing keys cannot flood the log.
    pub(crate) fn new(capacity: usize) -> FirstSeen {
        FirstSeen {
            seen: HashSet::new(),
            capacity,
            full: false,
        }
    }

    /// Logs the paths of `event`'s field report not seen before for its tenant and
    /// event; returns how many.
    pub(crate) fn observe(&mut self, event: &NormalizedEvent) -> usize {
        let Some(report) = &event.field_report else {
            return 0;
        };
        let unmapped = report
            .unmapped
            .iter()
            .map(|f| ("unmapped", &f.path, "", ""));
        let mistyped = report
            .mistyped
            .iter()
            .map(|f| ("mistyped", &f.path, f.expected.as_str(), f.found.as_str()));
        let mut new = 0;
        for (kind, path, expected, found) in unmapped.chain(mistyped) {
            let key = (
                event.tenant.clone(),
                event.event.clone(),
                kind,
                path.clone(),
            );
            if self.seen.contains(&key) {
                continue;
            }
            if self.seen.len() >= self.capacity {
                if !self.full {
                    self.full = true;
                    tracing::warn!(
                        capacity = self.capacity,
                        "Field discovery: too many distinct paths to announce each; see the unmapped_fields view"
                    );
                }
                return new;
            }
            tracing::info!(
                tenant = %event.tenant,
                event = %event.event,
                kind,
                path = %path,
                expected,
                found,
                "Field discovery: first {kind} path {path} for this tenant and event"
            );
            self.seen.insert(key);
            new += 1;
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{FieldReport, UnmappedField};

    fn event(tenant: &str, paths: &[&str]) -> NormalizedEvent {
        NormalizedEvent {
            tenant: tenant.into(),
            event: "call-ended".into(),
            field_report: Some(FieldReport {
                unmapped: paths
                    .iter()
                    .map(|p| UnmappedField {
                        path: (*p).into(),
                        example: "1".into(),
                    })
                    .collect(),
                mistyped: Vec::new(),
            }),
            ..NormalizedEvent::default()
        }
    }

    #[test]
    fn announces_a_path_once_per_tenant_and_event() {
        let mut seen = FirstSeen::new(100);
        assert_eq!(seen.observe(&event("acme", &["queueName", "x"])), 2);
        assert_eq!(seen.observe(&event("acme", &["queueName"])), 0);
        assert_eq!(seen.observe(&event("beta", &["queueName"])), 1);
        assert_eq!(seen.observe(&NormalizedEvent::default()), 0);
    }

    #[test]
    fn stops_announcing_once_full() {
        let mut seen = FirstSeen::new(2);
        assert_eq!(seen.observe(&event("acme", &["a", "b", "c"])), 2);
        assert_eq!(seen.observe(&event("acme", &["d"])), 0);
        assert_eq!(seen.seen.len(), 2);
    }
}
