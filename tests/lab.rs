//! `scripts/lab` fills the tests' own peer configurations (tests/peers/) as tests/support/*.rs
//! does. A placeholder added for the tests but not filled in by the lab breaks `scripts/lab`
//! (and CI's `scripts/lab --once`) while the suite stays green, so every placeholder of the
//! templates the lab fills must be one the lab sets.

use std::collections::BTreeSet;
use std::path::Path;

fn placeholders(template: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(template))
        .unwrap_or_else(|e| panic!("{template}: {e}"));
    let pattern = regex::Regex::new("@([A-Z0-9_]+)@").unwrap();
    pattern
        .captures_iter(&text)
        .map(|c| c[1].to_owned())
        .collect()
}

#[test]
fn the_lab_fills_every_placeholder_of_the_peer_configurations_it_uses() {
    let lab =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab")).unwrap();
    for template in ["tests/peers/nginx.conf", "tests/peers/turnserver.conf"] {
        let name = Path::new(template).file_name().unwrap().to_str().unwrap();
        assert!(
            lab.contains(&format!("fill {name} ")),
            "scripts/lab no longer fills {name}"
        );
        for placeholder in placeholders(template) {
            assert!(
                lab.contains(&format!("{placeholder}=")),
                "scripts/lab does not fill @{placeholder}@ of {template}"
            );
        }
    }
}
