//! Assembly-wide reads (`wardNo=-1`): the assembly's wards from cached master data, answered from their snapshots.
//!
//! Assembly-level volunteers ask for every ward of their assembly, unpaginated. The backend
//! answers that with one unbounded query; wardgate answers it from the wards' snapshots,
//! building (coalesced, like any miss) the wards not cached yet. Which wards an assembly has
//! comes from the master data the app itself reads, cached as blobs:
//! `states` (the state's `id` by `name`) → `assemblyConstituencys/{stateId}` (the assembly's
//! `id` by `assemblyNo`) → `wardsAndBooths/{assemblyConstituencyId}` (its `wards[].wardNo`).
//!
//! Rows come in ward order (wards by number), each ward in reference order: the backend's
//! `ORDER BY srno + 0, id` across wards would need a merge of every ward's rows, and the app
//! upserts rows by `id` whatever their order (docs/contract.md). Pages are windows over that
//! order. Gzip answers are the wards' stored pieces and stored-block framing: nothing is
//! compressed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::Response;
use serde_json::Value;

use crate::body::Body;
use crate::cache::{Cache, CacheError, CacheStatus};
use crate::config::Config;
use crate::gzip::Assembler;
use crate::params::{AssemblyKey, CitizensQuery, WardKey};
use crate::respond::{self, ApiError, Representation};
use crate::snapshot::{Picked, Snapshot};
use crate::time::EpochMs;

/// Why an assembly's wards could not be listed.
fn unknown(what: String) -> ApiError {
    ApiError::Unavailable {
        reason: format!("cannot list the wards of the assembly: {what}"),
        retry_after: Duration::from_secs(5),
    }
}

fn cache_error(e: CacheError) -> ApiError {
    match e {
        CacheError::Unavailable { reason } => unknown(reason),
        CacheError::Upstream(e) => ApiError::Upstream(e),
    }
}

/// A master-data blob as JSON, from the cache (the same entries the app's own reads use).
async fn master(cache: &Arc<Cache>, path: String, max_age: Duration) -> Result<Value, ApiError> {
    let found = cache
        .blob(path.clone(), max_age)
        .await
        .map_err(cache_error)?;
    serde_json::from_slice(&found.value.identity)
        .map_err(|e| unknown(format!("{path} is not JSON: {e}")))
}

/// A JSON id or number, as a string: the backend may write either.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `id` of the element of `list` whose `field` is `want` (case-insensitive, as MySQL's
/// default collation compares the backend's `WHERE state = '…'`).
fn find_id(list: &Value, field: &str, want: &str) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|e| text(&e[field]).is_some_and(|v| v.eq_ignore_ascii_case(want)))
        .and_then(|e| text(&e["id"]))
}

/// The wards of an assembly, by number, from cached master data; `None` when the master data
/// does not list the assembly (the backend, which answers from its rows, is asked instead).
pub async fn wards_of(
    cache: &Arc<Cache>,
    a: &AssemblyKey,
    cfg: &Config,
) -> Result<Option<Vec<WardKey>>, ApiError> {
    let ages = &cfg.cache.master_max_age;
    let states = master(cache, "/open/volunteer/states".into(), ages.states.0).await?;
    let Some(state_id) = find_id(&states["states"], "name", &a.state) else {
        return Ok(None);
    };
    let path = format!("/open/volunteer/assemblyConstituencys/{state_id}");
    let list = master(cache, path, ages.assembly_constituencies.0).await?;
    let Some(ac_id) = find_id(&list["assemblyConstituencys"], "assemblyNo", &a.assembly) else {
        return Ok(None);
    };
    let path = format!("/open/volunteer/wardsAndBooths/{ac_id}");
    let wards = master(cache, path, ages.wards_and_booths.0).await?;
    let mut numbers: Vec<String> = wards["wards"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| text(&w["wardNo"])).collect())
        .unwrap_or_default();
    // By number, as the app lists them; a number out of the contract's format is skipped
    // (it could never be asked for by ward either).
    numbers.retain(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    numbers.sort_by_key(|n| (n.len(), n.clone()));
    numbers.dedup();
    let wards = numbers.into_iter().map(|ward| WardKey {
        state: a.state.clone(),
        assembly: a.assembly.clone(),
        ward,
    });
    Ok(Some(wards.collect()))
}

/// The assembly's snapshots, fetched (and built where missing) together; the worst cache
/// result among them is the answer's.
pub async fn snapshots(
    cache: &Arc<Cache>,
    wards: &[WardKey],
    max_age: Duration,
) -> Result<(Vec<Arc<Snapshot>>, CacheStatus), ApiError> {
    let found = futures_util::future::join_all(wards.iter().map(|w| cache.ward(w, max_age))).await;
    let mut status = CacheStatus::HIT;
    let mut snaps = Vec::with_capacity(found.len());
    for f in found {
        let f = f?;
        status = match (status, f.status) {
            (_, CacheStatus::MISS) | (CacheStatus::MISS, _) => CacheStatus::MISS,
            (_, CacheStatus::STALE) | (CacheStatus::STALE, _) => CacheStatus::STALE,
            (s, _) => s,
        };
        snaps.push(f.value);
    }
    Ok((snaps, status))
}

/// Each ward's picked rows for the query: its filters, and the page as a window over the
/// wards in order.
fn pick_all(snaps: &[Arc<Snapshot>], q: &CitizensQuery) -> Vec<Picked> {
    let sel = respond::selection(q);
    let (mut skip, mut take) = match q.page {
        Some(p) => (p.offset(), u64::from(p.size)),
        None => (0, u64::MAX),
    };
    let mut out = Vec::with_capacity(snaps.len());
    for s in snaps {
        let picked = if take == 0 {
            s.pick_window(&sel, 0, 0)
        } else if skip > 0 {
            // Count this ward's matches first: the window may pass over all of them.
            let all = s.pick_window(&sel, 0, u64::MAX);
            if all.count as u64 <= skip {
                skip -= all.count as u64;
                s.pick_window(&sel, 0, 0)
            } else {
                let p = s.pick_window(&sel, std::mem::take(&mut skip), take);
                take -= p.count as u64;
                p
            }
        } else {
            let p = s.pick_window(&sel, 0, take);
            take = take.saturating_sub(p.count as u64);
            p
        };
        out.push(picked);
    }
    out
}

/// The answer to an assembly-wide read from its wards' snapshots.
pub fn answer(
    store: &Cache,
    snaps: &[Arc<Snapshot>],
    q: &CitizensQuery,
    req: &HeaderMap,
    status: CacheStatus,
    max_rows: u32,
) -> Result<Response<Body>, ApiError> {
    // One tier for the whole answer, before the newest change of any ward: a superset for each.
    let newest = snaps.iter().map(|s| s.newest_change()).max();
    let q = &*respond::tiered(q, newest.unwrap_or_else(EpochMs::now));
    let picked = pick_all(snaps, q);
    let count: usize = picked.iter().map(|p| p.count).sum();
    if q.page.is_none() && count > max_rows as usize {
        return Err(ApiError::TooManyRows {
            rows: count,
            limit: max_rows,
        });
    }
    let gzip = respond::accepts_gzip(req);
    let rep = Representation {
        etag: etag(snaps, q, gzip),
        gzip,
        content_type: store.citizens_content_type(),
        snapshot_time: snaps
            .iter()
            .map(|s| s.built_at)
            .min()
            .or(Some(EpochMs::now())),
    };
    let (head, tail) = respond::envelope(q.page, count);
    let wards: Vec<(&Arc<Snapshot>, &Picked)> = snaps
        .iter()
        .zip(&picked)
        .filter(|(_, p)| p.count > 0)
        .collect();
    let (body, n) = if gzip {
        gzip_body(&wards, &head, &tail)?
    } else {
        identity_body(&wards, head, tail)
    };
    Ok(respond::cached_response(req, rep, status, || (body, n)))
}

/// The wards' picked rows as one gzip stream, from their stored pieces (nothing compressed
/// but the joins), and its length.
fn gzip_body(
    wards: &[(&Arc<Snapshot>, &Picked)],
    head: &[u8],
    tail: &[u8],
) -> Result<(Body, usize), ApiError> {
    let mut a = Assembler::gzip();
    a.literal(head);
    for (i, (s, p)) in wards.iter().enumerate() {
        if i > 0 {
            a.literal(b",");
        }
        s.render_gzip(p, &mut a)
            .map_err(|e| respond::unreadable(s, e))?;
    }
    a.literal(tail);
    let (parts, n) = a.finish();
    Ok((respond::parts_body(parts), n))
}

/// The wards' picked rows as plain JSON, in the envelope, and its length.
fn identity_body(wards: &[(&Arc<Snapshot>, &Picked)], head: Bytes, tail: Bytes) -> (Body, usize) {
    if wards.is_empty() {
        let n = head.len() + tail.len();
        return (respond::parts_body(vec![head, tail]), n);
    }
    let last = wards.len() - 1;
    let bodies: Vec<_> = wards
        .iter()
        .enumerate()
        .map(|(i, (s, p))| {
            let h = if i == 0 {
                head.clone()
            } else {
                Bytes::from_static(b",")
            };
            let t = if i == last {
                tail.clone()
            } else {
                Bytes::new()
            };
            s.identity(p, h, t)
        })
        .collect();
    let n = bodies.iter().map(|b| b.len()).sum();
    (respond::identity_bodies(bodies), n)
}

/// Changes whenever a ward's snapshot, the selection or the encoding does.
fn etag(snaps: &[Arc<Snapshot>], q: &CitizensQuery, gzip: bool) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = respond::Fnv::default();
    for s in snaps {
        s.tag.hash(&mut h);
    }
    (&q.booths, q.since_ms, q.page).hash(&mut h);
    format!("\"a-{:x}{}\"", h.finish(), if gzip { "-gz" } else { "" })
}
