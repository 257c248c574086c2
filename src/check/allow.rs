//! Which hosts the operator's network may reach (`--allow-target`). The resource author chooses
//! where the operator connects, so a cluster admin can fence that in (DESIGN.md §8).

use std::net::IpAddr;

/// Host patterns and CIDR ranges a check may target. Link-local and cloud metadata addresses
/// (169.254.0.0/16, fe80::/10) are refused unless a pattern allows them explicitly.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    // SKELETON: filled in by the implementation.
}

impl AllowList {
    /// Parses `--allow-target` values: exact hosts, `*.example.com` wildcards, CIDR ranges.
    /// No patterns means every host except link-local/metadata addresses.
    pub fn parse(patterns: &[String]) -> Result<Self, crate::probe::ConfigError> {
        let _ = patterns;
        todo!("SKELETON")
    }

    /// Whether a host name as written in the spec may be probed (IP literals included).
    pub fn allows_host(&self, host: &str) -> bool {
        let _ = host;
        todo!("SKELETON")
    }

    /// Whether a resolved address may be connected to.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let _ = ip;
        todo!("SKELETON")
    }
}
