//! STUN probe.
