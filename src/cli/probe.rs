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
use voipcheck::probe::media::{Codec, MediaConfig, Mos};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{ConfigError, Outcome, http, sip, stun};
use voipcheck::secret::Secret;
use voipcheck::verdict;

/// The environment variable read for the SIP password when `--password-file` is not given.
/// A password is never accepted on the command line, where `ps` and shell history would show it.
pub const PASSWORD_ENV: &str = "VOIPCHECK_SIP_PASSWORD";

/// The environment variable read for the callee account's password of `sip-call` when
/// `--callee-password-file` is not given.
pub const CALLEE_PASSWORD_ENV: &str = "VOIPCHECK_SIP_CALLEE_PASSWORD";

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
        #[command(flatten)]
        account: AccountArgs,
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
    /// A test call: INVITE (with digest authentication) from the account to a number that
    /// answers (--to) or to a second account this probe registers and answers itself
    /// (--callee-username: the hairpin call, out and in through the server), then RTP both
    /// ways and the hang-up. Prints the post-dial delay (INVITE to the first 18x), the setup
    /// time (INVITE to 200), the final response, who hung up, the audio per direction (packets,
    /// loss, jitter) with the round trip and the MOS (ITU-T G.107 E-model).
    ///
    /// Exit status 1 when the call fails (rejected, not ringing, not answered within
    /// --ring-timeout, dropped early) or its audio does (one-way, none, MOS below --min-mos).
    /// The passwords are read from files or the environment (VOIPCHECK_SIP_PASSWORD,
    /// VOIPCHECK_SIP_CALLEE_PASSWORD), never from the command line, and are never printed.
    #[command(after_help = "Examples:\n  \
        VOIPCHECK_SIP_PASSWORD=… voipcheck probe sip-call sip:pbx.example.com --username 100 --to sip:echo@pbx.example.com\n  \
        voipcheck probe sip-call 'sip:pbx.example.com;transport=tls' --username monitor-a --password-file a.pw \\\n      \
        --callee-username monitor-b --callee-password-file b.pw --media-duration 10s -v\n  \
        voipcheck probe sip-call sip:pbx.example.com --username 100 --to sip:+4930123456@pbx.example.com --answer ringing-is-enough")]
    SipCall {
        /// The caller's account (a callee account is at the same server).
        #[command(flatten)]
        account: AccountArgs,
        /// The number to call, a sip: or sips: URI that answers by itself (an echo service, an
        /// IVR, a DID).
        #[arg(long, value_parser = values::sip_server, required_unless_present = "callee_username", conflicts_with = "callee_username")]
        to: Option<String>,
        /// Call this second account instead, which the probe registers and answers itself.
        #[arg(long, value_parser = values::sip_user)]
        callee_username: Option<String>,
        /// The callee's digest user name, when it differs from --callee-username.
        #[arg(long, value_parser = values::sip_user, requires = "callee_username")]
        callee_auth_username: Option<String>,
        /// A file holding the callee's password (else VOIPCHECK_SIP_CALLEE_PASSWORD).
        #[arg(long, requires = "callee_username")]
        callee_password_file: Option<PathBuf>,
        /// required: only an answer (2xx) succeeds, then the audio and BYE; ringing-is-enough:
        /// success at the first 180/183, then CANCEL (nothing is charged, no audio).
        #[arg(long, value_enum, default_value_t = Answer::Required)]
        answer: Answer,
        /// How long the call may ring before it is cancelled as not answered (1s to 3m).
        #[arg(long, default_value = "20s", value_parser = values::ring_timeout)]
        ring_timeout: Duration,
        /// How long RTP is sent after the answer (1s to 1m).
        #[arg(long, default_value = "5s", value_parser = values::media_duration)]
        media_duration: Duration,
        /// The G.711 codec offered first.
        #[arg(long, value_enum, default_value_t = CodecArg::Pcma)]
        codec: CodecArg,
        /// Signalling only: no SDP media is sent after the answer, so no audio is measured.
        #[arg(long, conflicts_with_all = ["media_duration", "codec", "advertise_stun", "min_mos"])]
        no_media: bool,
        /// Offer the public address this STUN server (HOST[:PORT]) maps the RTP socket to,
        /// instead of the local one (behind NAT, a private address gets no audio: seed 004).
        #[arg(long, value_name = "HOST[:PORT]", value_parser = values::host_port)]
        advertise_stun: Option<String>,
        /// The lowest acceptable MOS, 1.0 to 4.5 (below it the probe fails: PoorQuality).
        #[arg(long, default_value = "3.6", value_parser = values::mos)]
        min_mos: Mos,
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

/// A SIP account and its server, as `sip-register` registers it and `sip-call` calls from it.
#[derive(Args)]
struct AccountArgs {
    /// The server: sip: or sips: URI, optionally with ;transport=udp|tcp|tls. Without a port
    /// the server is found by DNS as RFC 3263 describes (NAPTR, SRV, A/AAAA).
    #[arg(value_parser = values::sip_server)]
    server: String,
    /// The account's user name: the user part of the address of record (and the digest user
    /// name unless --auth-username is given).
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
    /// A file holding the password (a trailing newline is ignored; else
    /// VOIPCHECK_SIP_PASSWORD).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

impl AccountArgs {
    /// The account, its password read as [`read_password`] reads it.
    fn account(self, ca: Option<CaSource>) -> Result<sip::Account, ConfigError> {
        Ok(sip::Account {
            password: read_password(self.password_file.as_deref())?,
            server: self.server,
            username: self.username,
            auth_username: self.auth_username,
            domain: self.domain,
            proxy: self.proxy,
            ca,
        })
    }
}

/// `--answer` of the call probe.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Answer {
    Required,
    RingingIsEnough,
}

/// `--codec` of the call probe.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CodecArg {
    Pcma,
    Pcmu,
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
            account,
            expires,
            keep_registration,
            ca_file,
            verbose,
        } => {
            let account = account.account(ca_file.map(CaSource::File))?;
            let config = sip::RegisterConfig {
                server: account.server,
                username: account.username,
                auth_username: account.auth_username,
                domain: account.domain,
                proxy: account.proxy,
                password: account.password,
                expires,
                unregister: !keep_registration,
                timeout,
                ca: account.ca,
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
        Probe::SipCall {
            account,
            to,
            callee_username,
            callee_auth_username,
            callee_password_file,
            answer,
            ring_timeout,
            media_duration,
            codec,
            no_media,
            advertise_stun,
            min_mos,
            ca_file,
            verbose,
        } => {
            let callee = match (to, callee_username) {
                (Some(to), _) => sip::Callee::Number(to),
                (None, Some(username)) => sip::Callee::Account {
                    username,
                    auth_username: callee_auth_username,
                    password: read_secret(
                        callee_password_file.as_deref(),
                        "--callee-password-file",
                        CALLEE_PASSWORD_ENV,
                    )?,
                },
                (None, None) => unreachable!("clap requires --to or --callee-username"),
            };
            // Ringing being enough, the call is cancelled before any audio.
            let media = (!no_media && answer == Answer::Required).then_some(MediaConfig {
                duration: media_duration,
                codec: match codec {
                    CodecArg::Pcma => Codec::Pcma,
                    CodecArg::Pcmu => Codec::Pcmu,
                },
                mos_threshold: min_mos,
            });
            let config = sip::CallConfig {
                caller: account.account(ca_file.map(CaSource::File))?,
                callee,
                answer: match answer {
                    Answer::Required => sip::AnswerPolicy::Required,
                    Answer::RingingIsEnough => sip::AnswerPolicy::RingingIsEnough,
                },
                ring_timeout,
                media,
                advertise: match advertise_stun {
                    Some(server) => sip::SdpAddress::StunMapped { server },
                    None => sip::SdpAddress::Local,
                },
                timeout,
            };
            let outcome = sip::call(&dns, &config).await?;
            let code = report(
                "sip-call",
                ProbeKind::SipCall,
                ProbeOutcome::SipCall,
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
    read_secret(file, "--password-file", PASSWORD_ENV)
}

/// A password from `file` (the value of the option `flag`), else from the variable `env`.
fn read_secret(file: Option<&Path>, flag: &str, env: &str) -> Result<Secret, ConfigError> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(flag, format!("{}: {e}", path.display())))?,
        None => std::env::var(env)
            .map_err(|_| ConfigError::new("password", format!("give {flag} or set {env}")))?,
    };
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(ConfigError::new("password", "the password is empty"));
    }
    Ok(Secret::new(value))
}
