//! TEMPORARY until wt-responses lands.
pub mod native {
    pub fn classify_event(event: &[u8]) -> crate::streaming::sse::EventKind {
        crate::streaming::sse::classify_event(event)
    }
}
