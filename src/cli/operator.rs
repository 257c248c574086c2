//! `voipcheck operator`: the in-cluster controller. Turns flags (and the pod's environment)
//! into an [`OperatorConfig`] and runs it until SIGTERM or SIGINT.

use super::LogFormat;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;
use voipcheck::api::patterns;
use voipcheck::check::AllowList;
use voipcheck::operator::leader::LeaseConfig;
use voipcheck::operator::{self, OperatorConfig, SecretAccess};
use voipcheck::probe::dns::parse_nameserver;
use voipcheck::schedule;

#[derive(Args)]
#[command(after_help = "\
Run in a pod whose service account may: get/list/watch/patch voipchecks (voipcheck.io; the \
patch sets each check's shard label); patch voipchecks/status; get/list/watch secrets (read \
only; get only with --secret-access get); \
create/patch events (events.k8s.io); \
get/list/create/update/delete leases (coordination.k8s.io) in the lease namespace.

Replicas share the checks: 12 shards, each a Lease <lease-name>-<location>-<n>, and one member \
Lease <lease-name>-<location>-member-<identity> per replica; each replica holds an equal share \
and watches, probes and writes only the checks of its shards (by their label \
voipcheck.io/shard, which the holder of the shard sets). Scaling moves shards without probing a \
check twice; the shards of a replica killed move within about 17 s (2 s after a graceful \
shutdown). A replica that cannot renew a shard's Lease for 10 s stops writing its statuses \
before the Lease can expire, and keeps probing its checks (metrics only) until it sees another \
holder.

Examples:
  voipcheck operator
  voipcheck operator --namespace telephony --allow-target '*.starface-cloud.com' --allow-target 10.0.0.0/8
  voipcheck operator --log-format text --metrics-addr 127.0.0.1:9090")]
pub struct OperatorArgs {
    /// Watch only this namespace; repeat for several. Default: all namespaces.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,

    /// Probe only hosts matching this pattern: a host name, a `*.example.com` wildcard or a CIDR
    /// range; repeat for several. Default: any host except link-local/metadata addresses
    /// (169.254.0.0/16, fe80::/10), which need an explicit pattern.
    #[arg(long = "allow-target", value_name = "PATTERN")]
    allow_targets: Vec<String>,

    /// Ask this DNS server (ADDR[:PORT], port 53 by default) instead of the system's
    /// configuration (/etc/resolv.conf, /etc/hosts).
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_nameserver)]
    nameserver: Option<SocketAddr>,

    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,

    /// The `location` label of every metric series, to tell operator instances in different
    /// networks apart (alerts can require failures seen from two locations): a DNS label, as it
    /// names this location's entry of status.locations, its field manager and its Leases.
    #[arg(long, env = "VOIPCHECK_LOCATION", default_value = "default", value_parser = parse_location)]
    location: String,

    /// Write each check's verdict across locations (the top level of its status) from all
    /// locations' entries: true in exactly one location per cluster (`--aggregate=false` in
    /// the others, which then publish their own entries' Events).
    #[arg(long, env = "VOIPCHECK_AGGREGATE", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "true|false")]
    aggregate: bool,

    /// Probes in flight at once, across all checks (each holds a socket while it waits for its
    /// answer or timeout). Default: from the open-file limit (raised to its hard limit), less
    /// 256, at most 65536.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_concurrent_probes: Option<u32>,

    /// Log format on stderr (RUST_LOG sets the level; default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// The prefix of the Leases the replicas share the checks by (shard and member Leases).
    #[arg(long, default_value = "voipcheck-operator")]
    lease_name: String,

    /// The Leases' namespace. Default: the pod's namespace (POD_NAMESPACE, else the service
    /// account's or kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// How changed Secrets are noticed: `watch` (a metadata watch: at once; RBAC get, list and
    /// watch on Secrets, and Kubernetes' `list` grants reading every Secret's data in scope) or
    /// `get` (no watch: each check re-reads its Secrets every 5 min on average; RBAC get only).
    #[arg(long, default_value = "watch", value_name = "watch|get")]
    secret_access: SecretAccess,

    /// This replica's name in the Leases and in Events. Default: POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// Runs the operator; exit status 0 after a clean shutdown, 1 when it failed, 2 for bad flags
/// or no cluster configuration.
pub fn run(args: OperatorArgs) -> ExitCode {
    let allow = match AllowList::parse(&args.allow_targets) {
        Ok(allow) => allow,
        Err(e) => return usage_error(&e.to_string()),
    };
    let Some(identity) = args.identity.clone().or_else(host_name) else {
        return usage_error("no --identity given and no host name found");
    };
    if let Err(e) = check_lease_names(&args.lease_name, &args.location, &identity) {
        return usage_error(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage_error(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let clients = match kube::Config::infer().await {
            Ok(config) => operator::Clients::from_config(config),
            Err(e) => return usage_error(&format!("no Kubernetes configuration: {e}")),
        };
        let clients = match clients {
            Ok(clients) => clients,
            Err(e) => return usage_error(&format!("cannot build the Kubernetes client: {e}")),
        };
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| clients.api.default_namespace().to_owned());
        let config = OperatorConfig {
            namespaces: args.namespaces,
            allow,
            nameserver: args.nameserver,
            metrics_addr: args.metrics_addr,
            location: args.location,
            aggregate: args.aggregate,
            max_concurrent_probes: args.max_concurrent_probes.map_or_else(
                || schedule::probe_budget(schedule::open_files_limit()),
                |n| n as usize,
            ),
            lease: LeaseConfig {
                name: args.lease_name,
                namespace,
                identity,
                timings: Default::default(),
            },
            secret_access: args.secret_access,
        };
        match operator::run(clients, config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "operator failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Logs a configuration error (in the chosen log format) and exits with status 2.
fn usage_error(message: &str) -> ExitCode {
    tracing::error!("voipcheck operator: {message}");
    ExitCode::from(2)
}

/// `--location`: a DNS label (RFC 1123), as Kubernetes names things.
fn parse_location(text: &str) -> Result<String, String> {
    let label = regex::Regex::new(patterns::PROBE_NAME).expect("a valid pattern");
    if text.len() > 63 || !label.is_match(text) {
        return Err(
            "must be a DNS label: at most 63 lower-case letters, digits and '-', \
                    starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(text.to_owned())
}

/// The longest Lease name (a replica's member Lease) must be a valid object name, or every
/// Lease request fails and the replica never probes: refused at the start instead.
fn check_lease_names(lease_name: &str, location: &str, identity: &str) -> Result<(), String> {
    let member = format!("{lease_name}-{location}-member-{identity}");
    let subdomain = regex::Regex::new(patterns::SECRET_NAME).expect("a valid pattern");
    if member.len() > 253 || !subdomain.is_match(&member) {
        return Err(format!(
            "--lease-name, --location and --identity make the Lease name `{member}`, which is not \
             a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
        ));
    }
    Ok(())
}

/// The host name (a pod's name, when POD_NAME is not set).
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Resolves on the first SIGTERM or SIGINT, which starts the graceful shutdown; a second one
/// exits at once.
async fn shutdown_signal() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(1);
    });
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
