//! What a check's run holds while its probes wait for answers. On the worst day the peers stop
//! answering and every run waits out its timeout (with 10,000 checks at 30 s and a 5 s
//! timeout, ~1,700 runs at once), and a replica taking over a dead one's checks catches them
//! all up within a few seconds: what each waiting run holds is what the operator's memory grows
//! by then (the chart's default limit is 512 MiB). This binary counts the bytes its heap holds (its
//! own global allocator) while runs wait on peers that never answer.

use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use voipcheck::api::VoipCheckSpec;
use voipcheck::check::{self, AllowList, CheckId, StaticSecrets};
use voipcheck::probe::dns::Dns;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs waiting at once in the test.
const WAITING: usize = 200;

/// A UDP peer that reads every datagram and answers none; counts the datagrams it received.
async fn silent_udp_peer() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while socket.recv(&mut buf).await.is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, received)
}

/// A TCP peer that accepts every connection and never sends a byte; counts the connections.
async fn silent_tcp_peer() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            open.push(stream);
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_on_silent_peers_holds_its_probes_own_state_only() {
    let (sip, sip_received) = silent_udp_peer().await;
    let (stun, stun_received) = silent_udp_peer().await;
    let (web, web_accepted) = silent_tcp_peer().await;
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "silent" },
        "timeout": "5s",
        "sip": { "server": format!("sip:{sip};transport=udp"), "options": {} },
        "http": [{ "name": "web-ui", "url": format!("http://{web}/") }],
        "stun": { "servers": [stun.to_string()] }
    }))
    .unwrap();
    let id = CheckId::new("memory", "silent");
    let plan = check::plan(&id, &spec, &StaticSecrets::new(), &AllowList::default()).unwrap();
    let (plan, dns) = (
        Arc::new(plan),
        Arc::new(Dns::with_nameserver(([127, 0, 0, 1], 9).into())),
    );
    let before = LIVE.load(Ordering::Relaxed);
    let runs: Vec<_> = (0..WAITING)
        .map(|_| {
            let (plan, dns) = (plan.clone(), dns.clone());
            tokio::spawn(async move { check::run(&dns, &plan).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    for reached in [&sip_received, &stun_received, &web_accepted] {
        while reached.load(Ordering::Relaxed) < WAITING {
            assert!(Instant::now() < deadline, "every probe reaches its peer");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Every probe now waits for its answer (the first retransmissions are 500 ms away).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before) / WAITING;
    for run in runs {
        run.abort();
    }
    // 94 KiB today (each probe's task and state: SIP OPTIONS, HTTP, STUN); 287 KiB while every
    // probe's task was as large as a test call's (54 KiB) and the SIP probe's wait held a
    // 64 KiB receive buffer.
    assert!(
        held < 150 * 1024,
        "each waiting run holds {held} bytes: its probes' tasks should hold their own state, \
         not room for the largest kind of probe or for a datagram not yet received"
    );
}
