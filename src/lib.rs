//! voipcheck: synthetic checks for telephony services.
//!
//! The layout follows `DESIGN.md` §2: `probe` holds the protocol probes and knows nothing of
//! Kubernetes; everything above it decides what a probe outcome means.

pub mod api;
pub mod check;
pub mod metrics;
pub mod operator;
pub mod probe;
pub mod schedule;
pub mod secret;
pub mod standalone;
pub mod status;
pub mod verdict;
