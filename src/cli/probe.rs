//! `voipcheck probe …`: one probe now, a readable table or JSON, and an exit status a script
//! can use (0 success, 1 probe failed, 2 usage or configuration error).

use super::output::{OutputFormat, print_outcome};
use super::values;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use voipcheck::check::{ProbeKind, ProbeOutcome, ProbeRun};
use voipcheck::probe::dns::{Dns, parse_nameserver};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{ConfigError, Outcome, http, sip, stun};
use voipcheck::secret::Secret;
use voipcheck::verdict;

/// The environment variable read for the SIP password when `--password-file` is not given.
/// A password is never accepted on the command line, where `ps` and shell history would show it.
pub const PASSWORD_ENV: &str = "VOIPCHECK_SIP_PASSWORD";

#[derive(Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    kind: Probe,

    /// Give up after this long (100ms to 5m, e.g. 500ms, 10s); every network wait is bounded
    /// by it.
    #[arg(long, global = true, default_value = "10s", value_parser = values::timeout)]
    timeout: Duration,

    /// How to print the result.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    /// Ask this DNS server (ADDR[:PORT], port 53 by default) instead of the system's
    /// configuration (/etc/resolv.conf, /etc/hosts).
    #[arg(long, global = true, value_name = "ADDR[:PORT]", value_parser = parse_nameserver)]
    nameserver: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Probe {
    /// REGISTER with digest authentication until a final 200 OK ("is the line registered?").
    ///
    /// The password is read from --password-file or from the VOIPCHECK_SIP_PASSWORD environment
    /// variable, never from the command line, and is never printed.
    #[command(after_help = "Examples:\n  \
        VOIPCHECK_SIP_PASSWORD=… voipcheck probe sip-register sip:pbx.example.com --username 100\n  \
        voipcheck probe sip-register 'sip:sip.example.com;transport=tls' --username monitor --password-file /run/secrets/sip")]
    SipRegister {
        /// The registrar: sip: or sips: URI, optionally with ;transport=udp|tcp|tls. Without a
        /// port the server is found by DNS as RFC 3263 describes (NAPTR, SRV, A/AAAA).
        #[arg(value_parser = values::sip_server)]
        server: String,
        /// The account's user name: the user part of the address of record (and the digest
        /// user name unless --auth-username is given).
        #[arg(long, value_parser = values::sip_user)]
        username: String,
        /// The digest user name, when it differs from --username (trunks often have one).
        #[arg(long, value_parser = values::sip_user)]
        auth_username: Option<String>,
        /// The domain of the address of record, when it differs from the server's host; the
        /// REGISTER's Request-URI then names it (RFC 3261 §10.2).
        #[arg(long)]
        domain: Option<String>,
        /// An outbound proxy (sip: or sips: URI): requests go there, with a Route header.
        #[arg(long, value_parser = values::sip_server)]
        proxy: Option<String>,
        /// A file holding the password (a trailing newline is ignored).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Requested registration lifetime in seconds (60 to 86400).
        #[arg(long, default_value_t = sip::DEFAULT_EXPIRES, value_parser = values::expires)]
        expires: u32,
        /// Keep the registration instead of removing it (Expires: 0) after success.
        #[arg(long)]
        keep_registration: bool,
        /// Extra trusted CA certificates (PEM) for TLS, in addition to the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print the SIP messages exchanged, as a compact flow (credentials and nonces
        /// redacted).
        #[arg(short, long)]
        verbose: bool,
    },
    /// Send OPTIONS and classify the answer as Asterisk's qualify does: REACHABLE, LAGGED
    /// (answered later than the threshold) or UNREACHABLE (no answer within twice the threshold).
    #[command(after_help = "Examples:\n  \
        voipcheck probe sip-options sip:127.0.0.1:5060\n  \
        voipcheck probe sip-options 'sip:sip.example.com;transport=tcp' --lagged-threshold 500ms")]
    SipOptions {
        /// The SIP server: sip: or sips: URI (see sip-register).
        #[arg(value_parser = values::sip_server)]
        server: String,
        /// An outbound proxy (sip: or sips: URI): the OPTIONS goes there, with a Route header.
        #[arg(long, value_parser = values::sip_server)]
        proxy: Option<String>,
        /// Asterisk's qualify maxms: answers slower than this are LAGGED (100ms to 30s).
        #[arg(long, default_value = "2s", value_parser = values::lagged_threshold)]
        lagged_threshold: Duration,
        /// Extra trusted CA certificates (PEM) for TLS, in addition to the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print the SIP messages exchanged, as a compact flow.
        #[arg(short, long)]
        verbose: bool,
    },
    /// STUN Binding: the public address seen by one or more STUN servers, and optionally whether
    /// the NAT keeps a binding alive across the phones' keep-alive interval.
    #[command(after_help = "Examples:\n  \
        voipcheck probe stun stun.sipgate.net:3478 stun.l.google.com:19302\n  \
        voipcheck probe stun stun.example.com --nat-binding 60s --timeout 5s")]
    Stun {
        /// STUN servers as host[:port] (port 3478 when omitted), or stuns:host[:port] for STUN
        /// over TLS (port 5349). Several servers that report different public addresses fail
        /// with AddressMismatch; by default each must answer (see --require).
        #[arg(required = true, value_parser = values::stun_server)]
        servers: Vec<String>,
        /// Use TCP instead of UDP.
        #[arg(long, conflicts_with = "tls")]
        tcp: bool,
        /// Use TLS over TCP (RFC 8489 §6.2.2, port 5349 by default) for every server.
        #[arg(long)]
        tls: bool,
        /// all: a server that does not answer fails the probe (exit 1), naming it; any: one
        /// answer is enough.
        #[arg(long, value_enum, default_value_t = Require::All)]
        require: Require,
        /// Extra trusted CA certificates (PEM) for TLS, in addition to the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Also test whether a NAT binding survives this idle time (the phones' keep-alive,
        /// e.g. 60s; 1s to 2h); the probe then takes that long plus the timeout.
        #[arg(long, value_parser = values::keepalive_interval)]
        nat_binding: Option<Duration>,
    },
    /// GET a URL with per-phase timings (resolve, connect, tls, processing, transfer), the TLS
    /// certificate's expiry, status and optional body check.
    #[command(after_help = "Examples:\n  \
        voipcheck probe http https://maxmuster.starface-cloud.com/ --body-contains STARFACE\n  \
        voipcheck probe http https://push.example.com/health --expect-status 200 --expect-status 204")]
    Http {
        /// The URL (http or https), without user:password: a password on the command line
        /// shows in `ps` and the shell's history.
        #[arg(value_parser = values::http_url)]
        url: url::Url,
        /// An acceptable status code (100 to 599, repeatable); any 2xx when none is given.
        #[arg(long = "expect-status", value_parser = values::http_status)]
        expect_status: Vec<u16>,
        /// Fail unless the body contains this text.
        #[arg(long, value_parser = values::body_text)]
        body_contains: Option<String>,
        /// Fail unless the body matches this regular expression.
        #[arg(long, value_parser = values::body_regex)]
        body_regex: Option<regex::Regex>,
        /// Report a redirect as it is instead of following it.
        #[arg(long)]
        no_follow_redirects: bool,
        /// How many redirects to follow at most.
        #[arg(long, default_value_t = http::DEFAULT_MAX_REDIRECTS)]
        max_redirects: u8,
        /// Read at most this many bytes of the body (at most 64 MiB).
        #[arg(long, default_value_t = http::DEFAULT_MAX_BODY_BYTES, value_parser = values::body_bytes)]
        max_body_bytes: usize,
        /// Extra trusted CA certificates (PEM), in addition to the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

/// `--require` of the STUN probe.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Require {
    All,
    Any,
}

/// Runs the probe the arguments name and prints its outcome.
pub async fn run(args: ProbeArgs) -> ExitCode {
    match run_probe(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voipcheck: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_probe(args: ProbeArgs) -> Result<ExitCode, ConfigError> {
    let dns = Dns::new(args.nameserver)?;
    let timeout = args.timeout;
    let format = args.output;
    let code = match args.kind {
        Probe::SipRegister {
            server,
            username,
            auth_username,
            domain,
            proxy,
            password_file,
            expires,
            keep_registration,
            ca_file,
            verbose,
        } => {
            let config = sip::RegisterConfig {
                server,
                username,
                auth_username,
                domain,
                proxy,
                password: read_password(password_file.as_deref())?,
                expires,
                unregister: !keep_registration,
                timeout,
                ca: ca_file.map(CaSource::File),
            };
            let outcome = sip::register(&dns, &config).await?;
            let code = report(
                "sip-register",
                ProbeKind::SipRegister,
                ProbeOutcome::SipRegister,
                &outcome,
                format,
            );
            print_flow(verbose, &outcome.flow, format);
            code
        }
        Probe::SipOptions {
            server,
            proxy,
            lagged_threshold,
            ca_file,
            verbose,
        } => {
            let config = sip::OptionsConfig {
                server,
                proxy,
                lagged_threshold,
                timeout,
                ca: ca_file.map(CaSource::File),
            };
            let outcome = sip::options(&dns, &config).await?;
            let code = report(
                "sip-options",
                ProbeKind::SipOptions,
                ProbeOutcome::SipOptions,
                &outcome,
                format,
            );
            print_flow(verbose, &outcome.flow, format);
            code
        }
        Probe::Stun {
            servers,
            tcp,
            tls,
            require,
            ca_file,
            nat_binding,
        } => {
            let config = stun::StunConfig {
                servers,
                transport: match (tcp, tls) {
                    (_, true) => stun::StunTransport::Tls,
                    (true, false) => stun::StunTransport::Tcp,
                    (false, false) => stun::StunTransport::Udp,
                },
                timeout,
                nat_binding,
                require: match require {
                    Require::All => stun::StunRequire::All,
                    Require::Any => stun::StunRequire::Any,
                },
                ca: ca_file.map(CaSource::File),
            };
            let outcome = stun::probe(&dns, &config).await?;
            report(
                "stun",
                ProbeKind::Stun,
                ProbeOutcome::Stun,
                &outcome,
                format,
            )
        }
        Probe::Http {
            url,
            expect_status,
            body_contains,
            body_regex,
            no_follow_redirects,
            max_redirects,
            max_body_bytes,
            ca_file,
        } => {
            let config = http::HttpConfig {
                url,
                expect_status: http::ExpectStatus::from_codes(expect_status),
                body_contains,
                body_regex,
                follow_redirects: !no_follow_redirects,
                max_redirects,
                ca: ca_file.map(CaSource::File),
                timeout,
                max_body_bytes,
                // The CLI takes no credentials (a URL with user:password is refused).
                allow_insecure_basic_auth: false,
            };
            let outcome = http::probe(&dns, &config).await?;
            report(
                "http",
                ProbeKind::Http,
                ProbeOutcome::Http,
                &outcome,
                format,
            )
        }
    };
    Ok(code)
}

/// Prints `outcome` with what the check's condition would make of it (reason, whose problem).
fn report<O: Outcome + Clone>(
    name: &str,
    kind: ProbeKind,
    wrap: fn(O) -> ProbeOutcome,
    outcome: &O,
    format: OutputFormat,
) -> ExitCode {
    let run = ProbeRun {
        name: name.to_owned(),
        kind,
        outcome: wrap(outcome.clone()),
        duration: Duration::ZERO,
    };
    print_outcome(&run.name, outcome, &verdict::read(&run), format)
}

/// With `-v`, the SIP messages of the probe after its result, one block per message: on
/// stdout after the table, on stderr beside JSON (which stays one parsable document).
fn print_flow(verbose: bool, flow: &[sip::FlowEntry], format: OutputFormat) {
    if !verbose {
        return;
    }
    let mut text = String::from("\nSIP messages (time since start, → sent, ← received):\n");
    for entry in flow {
        text.push_str(&format!("{entry}\n"));
    }
    match format {
        OutputFormat::Table => print!("{text}"),
        OutputFormat::Json => eprint!("{text}"),
    }
}

/// The SIP password from `--password-file`, else from [`PASSWORD_ENV`].
fn read_password(file: Option<&Path>) -> Result<Secret, ConfigError> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--password-file", format!("{}: {e}", path.display())))?,
        None => std::env::var(PASSWORD_ENV).map_err(|_| {
            ConfigError::new(
                "password",
                format!("give --password-file or set {PASSWORD_ENV}"),
            )
        })?,
    };
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(ConfigError::new("password", "the password is empty"));
    }
    Ok(Secret::new(value))
}
