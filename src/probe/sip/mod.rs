//! SIP probes.
