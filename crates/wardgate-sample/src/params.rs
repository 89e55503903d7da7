//! Validation of the contract's query parameters: nothing outside the documented formats reaches a query.

use crate::sql::CitizenFilter;

/// Largest `size` a paged request may ask for.
pub const DEFAULT_MAX_PAGE_SIZE: u64 = 10_000;

/// `state`: non-empty, letters, spaces, `.` and `-`, at most 64 characters.
pub fn valid_state(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= 64
        && s.chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '.' || c == '-')
}

/// `assemblyNo`: 1 to 6 decimal digits.
pub fn valid_assembly(s: &str) -> bool {
    (1..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A ward or booth number: decimal digits, no longer than the VARCHAR(16) column.
pub fn valid_number(s: &str) -> bool {
    (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A validated `/open/volunteer/citizens` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitizensQuery {
    pub state: String,
    pub assembly_no: String,
    /// `None` = all wards (`-1`).
    pub ward_no: Option<String>,
    /// `None` = all booths (`-1`).
    pub booth_nos: Option<Vec<String>>,
    /// `None` = full download (`-1`).
    pub date: Option<i64>,
    /// `(page, size)` when the client paginates.
    pub page: Option<(u64, u64)>,
}

/// Collects the query string's pairs, rejecting a parameter given twice (which one would the
/// backend use?) and undecodable input.
fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("parameter `{k}` given more than once"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(pairs: &'a [(String, String)], key: &str) -> Result<&'a str, String> {
    get(pairs, key).ok_or_else(|| format!("missing parameter `{key}`"))
}

fn state_and_assembly(p: &[(String, String)]) -> Result<(String, String), String> {
    let state = required(p, "state")?;
    if !valid_state(state) {
        return Err("invalid `state`: letters, spaces, '.', '-', at most 64".into());
    }
    let assembly = required(p, "assemblyNo")?;
    if !valid_assembly(assembly) {
        return Err("invalid `assemblyNo`: 1 to 6 digits".into());
    }
    Ok((state.to_string(), assembly.to_string()))
}

fn ward(v: &str) -> Result<Option<String>, String> {
    match v {
        "-1" => Ok(None),
        w if valid_number(w) => Ok(Some(w.to_string())),
        _ => Err("invalid `wardNo`: digits or -1".into()),
    }
}

impl CitizensQuery {
    pub fn parse(query: Option<&str>, max_page_size: u64) -> Result<Self, String> {
        let p = pairs(query)?;
        let (state, assembly_no) = state_and_assembly(&p)?;
        let ward_no = ward(required(&p, "wardNo")?)?;
        let booth_nos = match required(&p, "boothNos")? {
            "-1" => None,
            list => {
                let booths: Vec<String> = list.split(',').map(str::to_string).collect();
                if booths.len() > 200 || !booths.iter().all(|b| valid_number(b)) {
                    return Err("invalid `boothNos`: -1 or 1..200 comma-separated numbers".into());
                }
                Some(booths)
            }
        };
        let date = match required(&p, "date")? {
            "-1" => None,
            d if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => Some(
                d.parse::<i64>()
                    .map_err(|_| "invalid `date`: out of range".to_string())?,
            ),
            _ => return Err("invalid `date`: -1 or epoch milliseconds".into()),
        };
        let page = match (get(&p, "page"), get(&p, "size")) {
            (None, None) => None,
            (Some(page), Some(size)) => {
                let page: u64 = page
                    .parse()
                    .map_err(|_| "invalid `page`: an integer >= 0".to_string())?;
                let size: u64 = size
                    .parse()
                    .ok()
                    .filter(|s| (1..=max_page_size).contains(s))
                    .ok_or_else(|| format!("invalid `size`: 1..{max_page_size}"))?;
                // OFFSET page*size (+1 row probed for hasMore) must fit the arithmetic.
                if page
                    .checked_mul(size)
                    .and_then(|o| o.checked_add(size + 1))
                    .is_none()
                {
                    return Err("invalid `page`: too large".into());
                }
                Some((page, size))
            }
            _ => return Err("`page` and `size` go together".into()),
        };
        Ok(CitizensQuery {
            state,
            assembly_no,
            ward_no,
            booth_nos,
            date,
            page,
        })
    }

    /// The filter for this request. For a paged request it asks for one row more than the
    /// page (`LIMIT size+1`), which tells whether more rows follow.
    pub fn filter(&self) -> CitizenFilter<'_> {
        CitizenFilter {
            state: &self.state,
            assembly_no: &self.assembly_no,
            ward_no: self.ward_no.as_deref(),
            booth_nos: self.booth_nos.as_deref(),
            modified_after_ms: self.date,
            limit_offset: self.page.map(|(page, size)| (size + 1, page * size)),
        }
    }
}

/// A validated `/api/dashboardStats` request; `wardNo` and `boothNo` default to `-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardQuery {
    pub state: String,
    pub assembly_no: String,
    pub ward_no: Option<String>,
    pub booth_no: Option<Vec<String>>,
}

impl DashboardQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let p = pairs(query)?;
        let (state, assembly_no) = state_and_assembly(&p)?;
        let ward_no = ward(get(&p, "wardNo").unwrap_or("-1"))?;
        let booth_no = match get(&p, "boothNo").unwrap_or("-1") {
            "-1" => None,
            b if valid_number(b) => Some(vec![b.to_string()]),
            _ => return Err("invalid `boothNo`: digits or -1".into()),
        };
        Ok(DashboardQuery {
            state,
            assembly_no,
            ward_no,
            booth_no,
        })
    }

    pub fn filter(&self) -> CitizenFilter<'_> {
        CitizenFilter {
            state: &self.state,
            assembly_no: &self.assembly_no,
            ward_no: self.ward_no.as_deref(),
            booth_nos: self.booth_no.as_deref(),
            modified_after_ms: None,
            limit_offset: None,
        }
    }
}

/// `state` and `assemblyNo` of the CSV export.
pub fn parse_assembly_query(query: Option<&str>) -> Result<(String, String), String> {
    state_and_assembly(&pairs(query)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = DEFAULT_MAX_PAGE_SIZE;

    #[test]
    fn accepts_contract_formats() {
        let q = CitizensQuery::parse(
            Some("state=Tamil+Nadu&assemblyNo=150&wardNo=-1&date=-1&boothNos=-1"),
            MAX,
        )
        .unwrap();
        assert_eq!(q.state, "Tamil Nadu");
        assert_eq!(
            (q.ward_no, q.booth_nos, q.date, q.page),
            (None, None, None, None)
        );
        let q = CitizensQuery::parse(
            Some("state=Karnataka&assemblyNo=150&wardNo=7&date=1714000000000&boothNos=70%2C71&page=2&size=1000&extra=x"),
            MAX,
        )
        .unwrap();
        assert_eq!(q.booth_nos, Some(vec!["70".into(), "71".into()]));
        assert_eq!(q.date, Some(1_714_000_000_000));
        assert_eq!(q.filter().limit_offset, Some((1001, 2000)));
        assert_eq!(q.filter().ward_no, Some("7"));
    }

    #[test]
    fn rejects_garbage() {
        let base = "state=Karnataka&assemblyNo=150&wardNo=7&date=-1&boothNos=-1";
        for bad in [
            "state=Karnataka'--&assemblyNo=150&wardNo=7&date=-1&boothNos=-1",
            "state=&assemblyNo=150&wardNo=7&date=-1&boothNos=-1",
            "state=Karnataka&assemblyNo=1234567&wardNo=7&date=-1&boothNos=-1",
            "state=Karnataka&assemblyNo=150&wardNo=7 OR 1=1&date=-1&boothNos=-1",
            "state=Karnataka&assemblyNo=150&wardNo=-2&date=-1&boothNos=-1",
            "state=Karnataka&assemblyNo=150&wardNo=7&date=-5&boothNos=-1",
            "state=Karnataka&assemblyNo=150&wardNo=7&date=99999999999999999999&boothNos=-1",
            "state=Karnataka&assemblyNo=150&wardNo=7&date=-1&boothNos=1,,2",
            "state=Karnataka&assemblyNo=150&wardNo=7&date=-1&boothNos=",
            "state=Karnataka&assemblyNo=150&wardNo=7&date=-1",
            "state=Karnataka&assemblyNo=150&wardNo=7&wardNo=8&date=-1&boothNos=-1",
        ] {
            assert!(CitizensQuery::parse(Some(bad), MAX).is_err(), "{bad}");
        }
        for tail in [
            "&page=0",
            "&size=10",
            "&page=-1&size=10",
            "&page=0&size=0",
            "&page=0&size=10001",
            "&page=18446744073709551615&size=10",
        ] {
            let q = format!("{base}{tail}");
            assert!(CitizensQuery::parse(Some(&q), MAX).is_err(), "{q}");
        }
        let many: Vec<String> = (1..=201).map(|i| i.to_string()).collect();
        let q = format!(
            "state=Karnataka&assemblyNo=150&wardNo=7&date=-1&boothNos={}",
            many.join(",")
        );
        assert!(CitizensQuery::parse(Some(&q), MAX).is_err());
        assert!(CitizensQuery::parse(None, MAX).is_err());
    }

    #[test]
    fn dashboard_defaults() {
        let q = DashboardQuery::parse(Some("state=Karnataka&assemblyNo=150")).unwrap();
        assert_eq!((q.ward_no, q.booth_no), (None, None));
        let q = DashboardQuery::parse(Some("state=Karnataka&assemblyNo=150&wardNo=3&boothNo=31"))
            .unwrap();
        assert_eq!(q.booth_no, Some(vec!["31".to_string()]));
        assert!(DashboardQuery::parse(Some("state=Karnataka&assemblyNo=150&boothNo=x")).is_err());
    }
}
