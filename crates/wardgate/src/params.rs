//! Strict validation of the citizens endpoint's query: nothing outside the contract's formats passes.
//!
//! The legacy backend concatenates these values into SQL, so this module is the wall in front of
//! it. **Invariant:** every value in a `CitizensQuery` matches the contract's format, and the query
//! wardgate sends upstream is re-encoded from a `CitizensQuery`, never copied from the client.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::config::CitizensConfig;

/// Longest `state` the contract allows, in characters.
const MAX_STATE_LEN: usize = 64;
/// Longest `assemblyNo`, in digits.
const MAX_ASSEMBLY_DIGITS: usize = 6;
/// Longest `wardNo` / booth number, in digits (VARCHAR(16) in the schema; 9 keeps them numeric).
const MAX_NUMBER_DIGITS: usize = 9;
/// Most booths one request may name.
const MAX_BOOTHS: usize = 200;

/// A parameter the client got wrong: it becomes `400 {"error": .., "param": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        param,
        message: message.into(),
    }
}

/// One ward: the unit of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WardKey {
    pub state: String,
    pub assembly: String,
    pub ward: String,
}

impl WardKey {
    /// Validates the three parts of a ward's identity (used by the admin API and `warm` too).
    pub fn parse(state: &str, assembly: &str, ward: &str) -> Result<WardKey, ParamError> {
        Ok(WardKey {
            state: parse_state(state)?,
            assembly: parse_assembly(assembly)?,
            ward: parse_digits("wardNo", ward, MAX_NUMBER_DIGITS)?,
        })
    }
}

impl WardKey {
    /// The assembly this ward belongs to.
    pub fn assembly_key(&self) -> AssemblyKey {
        AssemblyKey {
            state: self.state.clone(),
            assembly: self.assembly.clone(),
        }
    }
}

/// An assembly constituency of a state: what `wardNo=-1` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssemblyKey {
    pub state: String,
    pub assembly: String,
}

impl std::fmt::Display for AssemblyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.state, self.assembly)
    }
}

impl std::fmt::Display for WardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.state, self.assembly, self.ward)
    }
}

/// Which rows of the assembly a read covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One ward, served from its snapshot.
    Ward(WardKey),
    /// `wardNo=-1`: the whole assembly (only with `allow_assembly_wide`, always paginated).
    Assembly(AssemblyKey),
}

/// A set of booth numbers, sorted and deduplicated (the SQL `IN (...)` has set semantics).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoothSet(pub BTreeSet<String>);

/// A page of the result, `LIMIT size OFFSET page*size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    pub page: u32,
    pub size: u32,
}

impl Page {
    pub fn offset(&self) -> u64 {
        u64::from(self.page) * u64::from(self.size)
    }
}

/// A validated read of `/open/volunteer/citizens`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CitizensQuery {
    pub scope: Scope,
    /// `None` = `boothNos=-1` (all booths).
    pub booths: Option<BoothSet>,
    /// `None` = `date=-1` (full download); else epoch ms as the client sent it.
    pub since_ms: Option<i64>,
    /// `None` = the legacy unpaginated array.
    pub page: Option<Page>,
}

impl CitizensQuery {
    /// Parses and validates a raw query string under the current policy.
    pub fn parse(query: &str, policy: &CitizensConfig) -> Result<CitizensQuery, ParamError> {
        let raw = RawParams::collect(query)?;
        let scope = parse_scope(&raw, policy)?;
        let booths = match raw.get("boothNos") {
            None | Some("-1") => None,
            Some(b) => Some(parse_booths(b)?),
        };
        let since_ms = match raw.get("date") {
            None | Some("-1") => None,
            Some(d) => Some(parse_epoch_ms(d)?),
        };
        let page = parse_page(&raw, policy)?;
        Ok(CitizensQuery {
            scope,
            booths,
            since_ms,
            page,
        })
    }

    /// The ward this read is served from, if it is a single-ward read.
    pub fn ward(&self) -> Option<&WardKey> {
        match &self.scope {
            Scope::Ward(w) => Some(w),
            Scope::Assembly(_) => None,
        }
    }

    /// True for a plain full-ward download: the request whose answer is the whole snapshot.
    pub fn is_full_ward(&self) -> bool {
        matches!(self.scope, Scope::Ward(_))
            && self.booths.is_none()
            && self.since_ms.is_none()
            && self.page.is_none()
    }

    /// The query string sent upstream, re-encoded from validated values only.
    pub fn to_upstream_query(&self) -> String {
        let (state, assembly, ward) = match &self.scope {
            Scope::Ward(w) => (&w.state, &w.assembly, w.ward.as_str()),
            Scope::Assembly(a) => (&a.state, &a.assembly, "-1"),
        };
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", state)
            .append_pair("assemblyNo", assembly)
            .append_pair("wardNo", ward);
        let mut date = String::new();
        match self.since_ms {
            Some(d) => {
                let _ = write!(date, "{d}");
            }
            None => date.push_str("-1"),
        }
        q.append_pair("date", &date);
        let booths = match &self.booths {
            Some(b) => b.0.iter().cloned().collect::<Vec<_>>().join(","),
            None => "-1".to_string(),
        };
        q.append_pair("boothNos", &booths);
        if let Some(p) = self.page {
            q.append_pair("page", &p.page.to_string())
                .append_pair("size", &p.size.to_string());
        }
        q.finish()
    }
}

/// The query string split into single-valued parameters. Repeating a parameter is an error:
/// two values would be read differently by different servers.
struct RawParams<'q>([Option<Cow<'q, str>>; KNOWN_PARAMS.len()]);

impl<'q> RawParams<'q> {
    /// Each known parameter's value, borrowed from the query unless it had to be decoded: a
    /// well-formed app query costs no allocation here (this runs on every read).
    fn collect(query: &'q str) -> Result<RawParams<'q>, ParamError> {
        let mut out = RawParams(Default::default());
        for (k, v) in pairs(query) {
            // Unknown parameters (cache busters such as `_=`) are dropped: they never go upstream.
            let Some(i) = slot(&k) else {
                continue;
            };
            if out.0[i].is_some() {
                return Err(bad(KNOWN_PARAMS[i], "is given more than once"));
            }
            out.0[i] = Some(v);
        }
        Ok(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0[slot(name)?].as_deref()
    }
}

/// Where a known parameter's value is kept: its place in `KNOWN_PARAMS`. A `match` rather than
/// a search of the list: the compiler compares lengths first, and with a constant name (every
/// `get`) the place is known at compile time.
fn slot(name: &str) -> Option<usize> {
    let i = match name {
        "state" => 0,
        "assemblyNo" => 1,
        "wardNo" => 2,
        "boothNos" => 3,
        "date" => 4,
        "page" => 5,
        "size" => 6,
        _ => return None,
    };
    debug_assert_eq!(KNOWN_PARAMS[i], name);
    Some(i)
}

/// The query's `name=value` pairs, decoded exactly as `form_urlencoded::parse` decodes them
/// (empty pieces skipped, `+` as a space, `%XX` escapes, invalid UTF-8 replaced), but borrowed
/// from the query where there is nothing to decode: the app's queries have no escapes.
fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    // One scan of the whole query, rather than one per name and per value (every read); the
    // separators are found by `memchr` (all three are ASCII, so every cut is a char boundary).
    let plain = !needs_decoding(query);
    let mut from = 0;
    let ends = memchr::memchr_iter(b'&', query.as_bytes()).chain([query.len()]);
    let pieces = ends.map(move |end| {
        let piece = &query[from..end];
        from = end + 1;
        piece
    });
    pieces.filter(|p| !p.is_empty()).map(move |p| {
        let (k, v) = match memchr::memchr(b'=', p.as_bytes()) {
            Some(eq) => (&p[..eq], &p[eq + 1..]),
            None => (p, ""),
        };
        if plain {
            (Cow::Borrowed(k), Cow::Borrowed(v))
        } else {
            (decoded(k), decoded(v))
        }
    })
}

/// Whether `s` holds a `%` escape or a `+` (a space): the only bytes form decoding changes.
fn needs_decoding(s: &str) -> bool {
    memchr::memchr2(b'%', b'+', s.as_bytes()).is_some()
}

fn decoded(s: &str) -> Cow<'_, str> {
    if !needs_decoding(s) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

const KNOWN_PARAMS: &[&str] = &[
    "state",
    "assemblyNo",
    "wardNo",
    "boothNos",
    "date",
    "page",
    "size",
];

/// The canonical `state`: ASCII-lowercased. MySQL 8's default collation (utf8mb4_0900_ai_ci)
/// compares case-insensitively, so `Goa`, `GOA` and `gOa` name the same rows; one spelling per
/// ward keeps clients from multiplying snapshots (and backend builds) by varying the case.
fn parse_state(s: &str) -> Result<String, ParamError> {
    if s.is_empty() {
        return Err(bad("state", "must not be empty"));
    }
    if s.chars().count() > MAX_STATE_LEN {
        return Err(bad("state", "is longer than 64 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphabetic() || *c == ' ' || *c == '.' || *c == '-'))
    {
        return Err(bad(
            "state",
            format!("contains {c:?}: only letters, spaces, '.' and '-' are allowed"),
        ));
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_assembly(s: &str) -> Result<String, ParamError> {
    parse_digits("assemblyNo", s, MAX_ASSEMBLY_DIGITS)
}

fn parse_digits(param: &'static str, s: &str, max: usize) -> Result<String, ParamError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(param, format!("must be 1 to {max} decimal digits")));
    }
    Ok(s.to_string())
}

fn parse_booths(s: &str) -> Result<BoothSet, ParamError> {
    let mut set = BTreeSet::new();
    for (i, part) in s.split(',').enumerate() {
        if i >= MAX_BOOTHS {
            return Err(bad("boothNos", "names more than 200 booths"));
        }
        if part.is_empty()
            || part.len() > MAX_NUMBER_DIGITS
            || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(
                "boothNos",
                "must be -1 or a comma-separated list of booth numbers (digits)",
            ));
        }
        set.insert(part.to_string());
    }
    Ok(BoothSet(set))
}

fn parse_epoch_ms(s: &str) -> Result<i64, ParamError> {
    let ok = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit());
    let v = if ok { s.parse::<i64>().ok() } else { None };
    v.ok_or_else(|| {
        bad(
            "date",
            "must be -1 or epoch milliseconds (a non-negative integer)",
        )
    })
}

fn parse_u32(param: &'static str, s: &str) -> Result<u32, ParamError> {
    let ok = !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    let v = if ok { s.parse::<u32>().ok() } else { None };
    v.ok_or_else(|| bad(param, "must be a non-negative integer"))
}

/// `state`, `assemblyNo` and `wardNo`: one ward, or (`-1`, when allowed) the whole assembly.
fn parse_scope(raw: &RawParams, policy: &CitizensConfig) -> Result<Scope, ParamError> {
    let state = parse_state(
        raw.get("state")
            .ok_or_else(|| bad("state", "is required"))?,
    )?;
    let assembly = parse_assembly(
        raw.get("assemblyNo")
            .ok_or_else(|| bad("assemblyNo", "is required"))?,
    )?;
    match raw.get("wardNo") {
        Some("-1") | None if policy.allow_assembly_wide => {
            Ok(Scope::Assembly(AssemblyKey { state, assembly }))
        }
        None => Err(bad("wardNo", "is required")),
        Some("-1") => Err(bad(
            "wardNo",
            "-1 (whole assembly) is switched off here (citizens.allow_assembly_wide): ask for one ward",
        )),
        Some(w) => Ok(Scope::Ward(WardKey {
            state,
            assembly,
            ward: parse_digits("wardNo", w, MAX_NUMBER_DIGITS)?,
        })),
    }
}

/// `page` and `size`: the page asked for, its size capped; required where the policy demands it.
fn parse_page(raw: &RawParams, policy: &CitizensConfig) -> Result<Option<Page>, ParamError> {
    let page = match (raw.get("page"), raw.get("size")) {
        (None, None) => None,
        (p, s) => {
            let page = p.map_or(Ok(0), |p| parse_u32("page", p))?;
            let size = s.map_or(Ok(policy.max_page_size), |s| parse_u32("size", s))?;
            if size == 0 {
                return Err(bad("size", "must be at least 1"));
            }
            Some(Page {
                page,
                size: size.min(policy.max_page_size),
            })
        }
    };
    match page {
        None if policy.require_pagination => Err(bad(
            "page",
            format!(
                "pagination is required: add page=0&size={}",
                policy.max_page_size
            ),
        )),
        // OFFSET must stay within what the backend can address.
        Some(p) if p.offset() > u64::from(u32::MAX) => {
            Err(bad("page", "is too far: page*size exceeds 4294967295"))
        }
        page => Ok(page),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_as_form_urlencoded_does() {
        for q in [
            "state=Karnataka&assemblyNo=150&wardNo=1&date=-1&boothNos=-1&page=0&size=1000",
            "state=Tamil+Nadu&boothNos=1%2C2&&=x&a&b=&c==d=e&%FF=%zz&+=%2B&wardNo=%31",
            "",
            "&&&",
            "state=%E0%A4%95+%E0%A4&x=%",
            "&state=Goa&",
            "=",
            "state=Goa&wardNo=1&",
        ] {
            let ours: Vec<(String, String)> = pairs(q).map(|(k, v)| (k.into(), v.into())).collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            assert_eq!(ours, theirs, "{q}");
        }
        assert!(matches!(decoded("Karnataka"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_known_parameter_has_a_slot_of_its_own() {
        for (i, name) in KNOWN_PARAMS.iter().enumerate() {
            assert_eq!(slot(name), Some(i), "{name}");
        }
        for other in ["", "_", "State", "wardno", "sizes", "boothNo"] {
            assert_eq!(slot(other), None, "{other}");
        }
    }

    fn policy() -> CitizensConfig {
        CitizensConfig::default()
    }

    fn parse(q: &str) -> Result<CitizensQuery, ParamError> {
        CitizensQuery::parse(q, &policy())
    }

    #[test]
    fn legacy_full_download_parses() {
        let q = parse("state=Karnataka&assemblyNo=150&wardNo=7&date=-1&boothNos=-1").unwrap();
        assert!(q.is_full_ward());
        assert_eq!(q.ward().unwrap().ward, "7");
    }

    #[test]
    fn spaces_in_state_are_fine() {
        let q = parse("state=Tamil+Nadu&assemblyNo=1&wardNo=2").unwrap();
        assert_eq!(q.ward().unwrap().state, "tamil nadu");
        let q = parse("state=Jammu%20and%20Kashmir&assemblyNo=1&wardNo=2").unwrap();
        assert_eq!(q.ward().unwrap().state, "jammu and kashmir");
        let a = parse("state=GOA&assemblyNo=1&wardNo=2").unwrap();
        let b = parse("state=goa&assemblyNo=1&wardNo=2").unwrap();
        assert_eq!(a, b, "one ward key whatever the case");
    }

    #[test]
    fn injection_attempts_are_refused_with_the_param_named() {
        for (q, param) in [
            (
                "state=Karnataka'%20OR%201=1--&assemblyNo=150&wardNo=1",
                "state",
            ),
            ("state=Karnataka&assemblyNo=150;DROP&wardNo=1", "assemblyNo"),
            ("state=Karnataka&assemblyNo=150&wardNo=1%20OR%201", "wardNo"),
            (
                "state=Karnataka&assemblyNo=150&wardNo=1&boothNos=1,2)%20OR%20(1",
                "boothNos",
            ),
            ("state=Karnataka&assemblyNo=150&wardNo=1&date=0x10", "date"),
            ("state=Karnataka&assemblyNo=150&wardNo=1&date=-2", "date"),
            (
                "state=Karnataka&assemblyNo=150&wardNo=1&page=-1&size=10",
                "page",
            ),
            (
                "state=Karnataka&assemblyNo=150&wardNo=1&page=0&size=0",
                "size",
            ),
            ("state=&assemblyNo=150&wardNo=1", "state"),
            ("assemblyNo=150&wardNo=1", "state"),
            ("state=Karnataka&wardNo=1", "assemblyNo"),
            ("state=Karnataka&assemblyNo=1234567&wardNo=1", "assemblyNo"),
            ("state=Karnataka&assemblyNo=150&wardNo=-2", "wardNo"),
            ("state=Karnataka&assemblyNo=150&wardNo=1%20OR%201", "wardNo"),
            (
                "state=Karnataka&assemblyNo=150&wardNo=1&boothNos=",
                "boothNos",
            ),
            (
                "state=Karnataka&assemblyNo=150&wardNo=1&boothNos=1,,2",
                "boothNos",
            ),
            ("state=Karnataka&state=Goa&assemblyNo=150&wardNo=1", "state"),
            ("state=Kar%00nataka&assemblyNo=150&wardNo=1", "state"),
        ] {
            let e = parse(q).expect_err(q);
            assert_eq!(e.param, param, "{q}: {e}");
        }
    }

    #[test]
    fn page_size_is_capped_and_pagination_can_be_required() {
        let q = parse("state=Goa&assemblyNo=1&wardNo=1&page=2&size=5000").unwrap();
        assert_eq!(
            q.page,
            Some(Page {
                page: 2,
                size: 1000
            })
        );
        let strict = CitizensConfig {
            require_pagination: true,
            ..policy()
        };
        let e = CitizensQuery::parse("state=Goa&assemblyNo=1&wardNo=1", &strict).unwrap_err();
        assert_eq!(e.param, "page");
    }

    #[test]
    fn assembly_wide_reads_are_valid_paged_or_not_unless_switched_off() {
        // The backend's rule: `assemblyNo` or `wardNo`; installed apps send it unpaginated.
        for q in [
            "state=Goa&assemblyNo=1&wardNo=-1",
            "state=Goa&assemblyNo=1",
            "state=Goa&assemblyNo=1&wardNo=-1&page=0&size=10",
        ] {
            assert!(parse(q).unwrap().ward().is_none(), "{q}");
        }
        let closed = CitizensConfig {
            allow_assembly_wide: false,
            ..policy()
        };
        let e = CitizensQuery::parse("state=Goa&assemblyNo=1&wardNo=-1", &closed).unwrap_err();
        assert_eq!(e.param, "wardNo");
    }

    #[test]
    fn upstream_query_is_reencoded() {
        let q =
            parse("state=Tamil+Nadu&assemblyNo=1&wardNo=2&boothNos=3,1,3&date=5&_=123").unwrap();
        assert_eq!(
            q.to_upstream_query(),
            "state=tamil+nadu&assemblyNo=1&wardNo=2&date=5&boothNos=1%2C3"
        );
    }
}
