//! `wardgate demo`: the sample origin over generated in-memory voters, wardgate in front of it,
//! and curl commands to try. Needs nothing installed and nothing running.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cli::DemoArgs;
use crate::config::{Config, Secret};
use crate::server;
use wardgate_sample::{self as origin, MemoryStore, OriginOptions, Store};

const STATE: &str = "Karnataka";
const ASSEMBLY: &str = "150";
/// Known only to whoever runs the demo: it unlocks the admin routes for the curl examples.
const DEMO_TOKEN: &str = "demo-admin-token-not-for-production";

async fn free_or_any(addr: SocketAddr) -> SocketAddr {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => addr,
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}

/// Runs until Ctrl-C.
pub async fn run(args: &DemoArgs) -> Result<(), String> {
    tracing::info!(
        wards = args.wards,
        voters_per_ward = args.voters_per_ward,
        "generating voters"
    );
    let (wards, per) = (args.wards, args.voters_per_ward);
    let store = tokio::task::spawn_blocking(move || {
        MemoryStore::generate(&origin::RollSpec::new(STATE, ASSEMBLY, wards, per))
    })
    .await
    .map_err(|e| e.to_string())?;
    let origin_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let origin_addr = origin_l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(origin::serve(
        origin_l,
        Store::Memory(Arc::new(store)),
        OriginOptions::default(),
    ));

    let cfg = Config {
        listen: free_or_any(args.listen).await,
        admin_listen: free_or_any(args.admin_listen).await,
        upstream: format!("http://{origin_addr}"),
        admin_token: Some(Secret(DEMO_TOKEN.into())),
        ..Config::default()
    };
    cfg.validate().map_err(|e| e.to_string())?;
    let running = server::start(cfg).await.map_err(|e| e.to_string())?;
    let (p, a) = (running.public_addr, running.admin_addr);
    let q = format!("state={STATE}&assemblyNo={ASSEMBLY}");
    println!(
        r#"
wardgate demo: {wards} wards x {per} voters of {STATE}/{ASSEMBLY}, sample origin on {origin_addr}

  # A full ward, as every installed app asks for it (first MISS builds the snapshot, then HIT):
  curl -s -D- -o /dev/null --compressed "http://{p}/open/volunteer/citizens?{q}&wardNo=1&date=-1&boothNos=-1"
  # The same answer, gzip bytes served as stored:
  curl -s -H 'Accept-Encoding: gzip' "http://{p}/open/volunteer/citizens?{q}&wardNo=1&date=-1&boothNos=-1" | gunzip | head -c 400; echo
  # A page, and a booth subset:
  curl -s "http://{p}/open/volunteer/citizens?{q}&wardNo=1&date=-1&boothNos=-1&page=1&size=100" | head -c 300; echo
  curl -s "http://{p}/open/volunteer/citizens?{q}&wardNo=2&date=-1&boothNos=3,4" | head -c 300; echo
  # Malformed input never reaches the backend:
  curl -s "http://{p}/open/volunteer/citizens?state=Karnataka'--&assemblyNo=150&wardNo=1"; echo
  # A sync POST carrying a change, then the ward again (the change is in it):
  curl -s -X POST -H 'Content-Type: application/json' -d "[{{\"id\":$(curl -s "http://{p}/open/volunteer/citizens?{q}&wardNo=1&page=0&size=1" | sed 's/.*\"id\":\([0-9]*\).*/\1/'),\"voted\":true}}]" "http://{p}/open/volunteer/citizens?{q}&wardNo=1&date=-1&boothNos=-1" -o /dev/null -w '%{{http_code}}\n'
  # Master data (cached with the contract's TTLs):
  curl -s -D- "http://{p}/open/volunteer/states"
  # Operations:
  curl -s "http://{a}/metrics" | grep wardgate_requests
  curl -s -H 'Authorization: Bearer {DEMO_TOKEN}' "http://{a}/admin/snapshots"
  curl -s -X POST -H 'Authorization: Bearer {DEMO_TOKEN}' "http://{a}/admin/purge?{q}&wardNo=1"

Ctrl-C stops the demo.
"#
    );
    let _ = tokio::signal::ctrl_c().await;
    running.begin_drain();
    running.stop_now().await;
    Ok(())
}
