//! The Dockerfile, read without Docker (no engine runs here): a locked release build in a Rust
//! stage, a distroless final stage that gets exactly the binary that build produces, a non-root
//! user the chart agrees with, and an entry point that runs `voipcheck operator`. The
//! .dockerignore keeps target/ out and everything the build reads in.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// One instruction: its keyword (upper case) and its arguments as written.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// One `FROM` and the instructions after it.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// The last instruction of a kind (the one in force).
    fn last(&self, keyword: &str) -> &str {
        self.all(keyword)
            .last()
            .unwrap_or_else(|| panic!("no {keyword} in stage {}", self.image))
    }
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Parses the Dockerfile syntax this file uses: comments, blank lines, `\` continuations,
/// `KEYWORD args`, `FROM image [AS name]`.
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => panic!("unexpected FROM {args}"),
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// An exec-form (JSON array) argument list, which runs without a shell (distroless has none).
fn exec_form(args: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{args}: not the exec (JSON array) form: {e}"));
    value
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|v| v.as_str().expect("strings").to_owned())
        .collect()
}

fn dockerfile() -> Vec<Stage> {
    stages(&std::fs::read_to_string(repo("Dockerfile")).unwrap())
}

/// The build stage and the path of the binary its `cargo build` produces.
fn build_stage(stages: &[Stage]) -> (&Stage, String) {
    let build = stages
        .iter()
        .find(|s| s.all("RUN").any(|run| run.contains("cargo build")))
        .expect("a stage that runs cargo build");
    assert!(build.image.starts_with("rust:"), "{}", build.image);
    let run = build
        .all("RUN")
        .find(|run| run.contains("cargo build"))
        .unwrap();
    for flag in ["--release", "--locked"] {
        assert!(
            run.split_whitespace().any(|w| w == flag),
            "{run}: no {flag}"
        );
    }
    let workdir = build.last("WORKDIR").trim_end_matches('/');
    // The integration test's binary is the one `cargo build` names so.
    let bin = Path::new(env!("CARGO_BIN_EXE_voipcheck"))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (build, format!("{workdir}/target/release/{bin}"))
}

#[test]
fn a_locked_release_build_and_a_distroless_final_stage() {
    let stages = dockerfile();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    let (build, binary) = build_stage(&stages);
    assert!(
        build.name.is_some(),
        "the build stage is named for COPY --from"
    );
    let last = stages.last().unwrap();
    assert_eq!(last.image, "gcr.io/distroless/cc-debian12:nonroot");
    // The final stage gets the binary and nothing else.
    let copies: Vec<&str> = last.all("COPY").collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let words: Vec<&str> = copies[0].split_whitespace().collect();
    assert_eq!(
        words,
        [
            &format!("--from={}", build.name.as_ref().unwrap()),
            binary.as_str(),
            "/usr/local/bin/voipcheck",
        ]
    );
    assert!(last.all("RUN").next().is_none(), "distroless has no shell");
}

#[test]
fn entrypoint_runs_the_operator_subcommand_that_exists() {
    let stages = dockerfile();
    let last = stages.last().unwrap();
    let entrypoint = exec_form(last.last("ENTRYPOINT"));
    let cmd = exec_form(last.last("CMD"));
    assert_eq!(entrypoint, ["voipcheck"]);
    assert_eq!(cmd, ["operator"]);
    // On PATH in the image: /usr/local/bin is in distroless' PATH.
    let copied = last.last("COPY").split_whitespace().last().unwrap();
    assert_eq!(copied, format!("/usr/local/bin/{}", entrypoint[0]));
    // The same command line works on the binary the build produces.
    let help = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args(&cmd)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    // EXPOSE names the operator's default metrics port.
    let port = last.last("EXPOSE");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("[default: 0.0.0.0:{port}]")),
        "EXPOSE {port}, but:\n{help}"
    );
}

#[test]
fn runs_as_the_non_root_user_the_chart_expects() {
    let stages = dockerfile();
    let user = stages.last().unwrap().last("USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let uid: u32 = uid
        .parse()
        .expect("a numeric uid (Kubernetes' runAsNonRoot needs one)");
    let gid: u32 = gid.parse().expect("a numeric gid");
    assert_ne!(uid, 0);
    assert_ne!(gid, 0);
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo("charts/voipcheck/values.yaml")).unwrap(),
    )
    .unwrap();
    let pod = &values["podSecurityContext"];
    assert_eq!(pod["runAsUser"].as_u64(), Some(u64::from(uid)));
    assert_eq!(pod["runAsGroup"].as_u64(), Some(u64::from(gid)));
    assert_eq!(pod["runAsNonRoot"], Value::Bool(true));
}

#[test]
fn dockerignore_keeps_target_out_and_the_sources_in() {
    let text = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(patterns.contains(&"target"), "{patterns:?}");
    assert!(patterns.contains(&".git"), "{patterns:?}");
    // What cargo reads: the manifest, the lock file, and every target's sources (benches and
    // tests included: cargo checks that declared targets exist).
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "tests",
        "examples",
    ];
    for pattern in &patterns {
        assert!(
            !pattern.contains(['*', '?', '!']),
            "keep patterns plain: {pattern}"
        );
        for path in needed {
            assert!(
                path != *pattern && !path.starts_with(&format!("{pattern}/")),
                ".dockerignore excludes {path} ({pattern}), which the build reads"
            );
        }
    }
}
