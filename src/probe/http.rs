//! HTTP probe.
