//! A whole operator (`operator::run`) on the in-test API server ([`super::fake_api`]), watching
//! one namespace, with its `/metrics`, `/healthz` and `/readyz` on a free loopback port. Each
//! runs on a runtime of its own, so that [`RunningOperator::kill`] (or a drop) ends every task
//! of it at once, as SIGKILL ends a process: nothing is released. [`RunningOperator::stop`]
//! stops it as SIGTERM does.

use super::fake_api::FakeApi;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use voipcheck::check::AllowList;
use voipcheck::operator::leader::{LeaseConfig, LeaseTimings};
use voipcheck::operator::{self, Clients, OperatorConfig, SecretAccess};

/// The namespace of the Lease.
pub const LEASE_NAMESPACE: &str = "ops";
pub const LEASE_NAME: &str = "voipcheck-operator";
/// The `--location` of a replica unless configured otherwise.
pub const LOCATION: &str = "test";
/// How long a start, a readiness or a stop may take.
const WAIT: Duration = Duration::from_secs(30);

/// The name of shard `n`'s Lease in [`LOCATION`].
pub fn shard_lease(n: usize) -> String {
    format!("{LEASE_NAME}-{LOCATION}-{n}")
}

/// The name of the member Lease of replica `identity` in [`LOCATION`].
pub fn member_lease(identity: &str) -> String {
    format!("{LEASE_NAME}-{LOCATION}-member-{identity}")
}

pub struct RunningOperator {
    metrics_port: u16,
    stop: Option<oneshot::Sender<()>>,
    ended: Option<oneshot::Receiver<operator::Result<()>>>,
    runtime: Option<Runtime>,
}

impl RunningOperator {
    /// Replica `identity`, watching `namespace`, with Lease `timings`.
    pub fn start(
        api: &FakeApi,
        namespace: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> RunningOperator {
        Self::start_with(api, namespace, identity, timings, SecretAccess::Watch)
    }

    /// As [`RunningOperator::start`], learning of Secret changes as `secret_access` says.
    pub fn start_with(
        api: &FakeApi,
        namespace: &str,
        identity: &str,
        timings: LeaseTimings,
        secret_access: SecretAccess,
    ) -> RunningOperator {
        Self::start_configured(api, namespace, identity, |config| {
            config.lease.timings = timings;
            config.secret_access = secret_access;
        })
    }

    /// Replica `identity` in location `test` (aggregating), watching `namespace`, with the
    /// default Lease timings, after `configure` changed its configuration.
    pub fn start_configured(
        api: &FakeApi,
        namespace: &str,
        identity: &str,
        configure: impl FnOnce(&mut OperatorConfig),
    ) -> RunningOperator {
        let metrics_port = super::free_port();
        let mut config = OperatorConfig {
            namespaces: vec![namespace.into()],
            allow: AllowList::parse(&[]).unwrap(),
            nameserver: None,
            metrics_addr: ([127, 0, 0, 1], metrics_port).into(),
            location: LOCATION.into(),
            aggregate: true,
            max_concurrent_probes: 16,
            lease: LeaseConfig {
                name: LEASE_NAME.into(),
                namespace: LEASE_NAMESPACE.into(),
                identity: identity.into(),
                timings: LeaseTimings::default(),
            },
            secret_access: SecretAccess::Watch,
        };
        configure(&mut config);
        let mut kube = api.config();
        kube.headers.push((
            http::header::HeaderName::from_static(super::fake_api::CLIENT_HEADER),
            http::header::HeaderValue::from_str(identity).expect("an identity is a header value"),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let (end, ended) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The clients too: their connections end with the runtime.
        runtime.spawn(async move {
            let clients = Clients::from_config(kube).unwrap();
            let result = operator::run(clients, config, async {
                let _ = stopped.await;
            })
            .await;
            let _ = end.send(result);
        });
        RunningOperator {
            metrics_port,
            stop: Some(stop),
            ended: Some(ended),
            runtime: Some(runtime),
        }
    }

    /// `GET path` on the metrics endpoint: status code and body. HTTP/1.0, so the body comes
    /// without chunked encoding.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.get(9..12)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    }

    /// `/metrics` as text; empty while the endpoint is not up.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of a series on `/metrics` (see [`sample`]).
    pub async fn sample(&self, metric: &str, labels: &[&str]) -> Option<f64> {
        sample(&self.metrics().await, metric, labels)
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get("/readyz").await.map(|(code, _)| code) != Some(200) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz never turned ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the operator as SIGTERM does (the Leases are released) and waits for a clean end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = self.ended.take().expect("not stopped yet");
        tokio::time::timeout(WAIT, ended)
            .await
            .expect("the operator stops")
            .expect("the operator ends")
            .expect("a clean shutdown");
    }

    /// Ends every task of the operator at once, as SIGKILL does: nothing is released.
    pub fn kill(self) {}
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The value of the first series of `metric` in `text` whose line contains every one of
/// `labels`.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
