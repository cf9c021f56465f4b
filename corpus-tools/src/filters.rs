//! What is kept: languages, and PMC licences from a bulk file list.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Languages kept, as MEDLINE's three-letter codes; JATS two-letter codes map onto them.
#[derive(Debug, Clone)]
pub enum Languages {
    All,
    Only(BTreeSet<String>),
}

const TWO_TO_THREE: &[(&str, &str)] = &[
    ("en", "eng"),
    ("de", "ger"),
    ("fr", "fre"),
    ("es", "spa"),
    ("it", "ita"),
    ("pt", "por"),
    ("ja", "jpn"),
    ("zh", "chi"),
    ("ru", "rus"),
    ("pl", "pol"),
    ("nl", "dut"),
    ("ko", "kor"),
    ("tr", "tur"),
    ("cs", "cze"),
    ("sv", "swe"),
    ("da", "dan"),
    ("no", "nor"),
    ("fi", "fin"),
    ("hu", "hun"),
    ("el", "gre"),
    ("he", "heb"),
    ("ar", "ara"),
    ("fa", "per"),
    ("uk", "ukr"),
];

/// MEDLINE's code for a language code of either length (ISO 639-2/T spellings too).
pub fn normalize_language(code: &str) -> String {
    let code = code.trim().to_lowercase();
    let code = code.split(['-', '_']).next().unwrap_or("").to_string();
    if let Some((_, three)) = TWO_TO_THREE.iter().find(|(two, _)| *two == code) {
        return three.to_string();
    }
    match code.as_str() {
        "deu" => "ger".into(),
        "fra" => "fre".into(),
        "zho" => "chi".into(),
        "nld" => "dut".into(),
        "ces" => "cze".into(),
        "ell" => "gre".into(),
        "fas" => "per".into(),
        _ => code,
    }
}

impl Languages {
    /// `all`, or a comma-separated list (`eng,fre` or `en,fr`).
    pub fn parse(spec: &str) -> Result<Languages> {
        if spec.trim().eq_ignore_ascii_case("all") {
            return Ok(Languages::All);
        }
        let set: BTreeSet<String> = spec
            .split(',')
            .map(normalize_language)
            .filter(|c| !c.is_empty())
            .collect();
        if set.is_empty() {
            bail!("--languages {spec:?}: expected `all` or codes such as eng,fre");
        }
        Ok(Languages::Only(set))
    }

    /// A record is kept when one of its languages is; a record that names none is kept.
    pub fn accepts(&self, codes: &[String]) -> bool {
        match self {
            Languages::All => true,
            Languages::Only(set) => {
                codes.is_empty() || codes.iter().any(|c| set.contains(&normalize_language(c)))
            }
        }
    }

    pub fn describe(&self) -> Vec<String> {
        match self {
            Languages::All => vec!["all".into()],
            Languages::Only(set) => set.iter().cloned().collect(),
        }
    }
}

/// PMC's bulk file list (`oa_comm_xml.*.filelist.csv`, `oa_file_list.csv`): for each
/// accession id its licence and retraction flag. Articles absent from the list, or
/// whose licence is not wanted, are skipped.
#[derive(Debug, Clone)]
pub struct LicenseFilter {
    by_pmcid: HashMap<u64, (String, bool)>,
    wanted: BTreeSet<String>,
}

pub enum LicenseDecision {
    Keep(String),
    NotListed,
    Unwanted(String),
    Retracted,
}

impl LicenseFilter {
    /// `subset`: licences as the list spells them (`CC BY,CC0`), or `commercial`
    /// (CC0, CC BY, CC BY-SA, CC BY-ND) or `noncommercial` (those and the CC BY-NC ones).
    pub fn load(csv: &Path, subset: &str) -> Result<LicenseFilter> {
        let text = std::fs::read_to_string(csv)
            .with_context(|| format!("{}: cannot read", csv.display()))?;
        let mut lines = text.lines();
        let header = split_csv(lines.next().unwrap_or(""));
        let column = |names: &[&str]| {
            header
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
        };
        let (Some(id_col), Some(license_col)) = (
            column(&["AccessionID", "Accession ID"]),
            column(&["License"]),
        ) else {
            bail!(
                "{}: line 1: expected a header with AccessionID and License columns",
                csv.display()
            );
        };
        let retracted_col = column(&["Retracted"]);
        let mut by_pmcid = HashMap::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields = split_csv(line);
            let id = fields
                .get(id_col)
                .and_then(|f| f.trim().trim_start_matches("PMC").parse::<u64>().ok())
                .with_context(|| {
                    format!(
                        "{}: line {}: expected a PMC accession id",
                        csv.display(),
                        n + 2
                    )
                })?;
            let license = fields.get(license_col).map_or("", |s| s.trim()).to_string();
            let retracted = retracted_col
                .and_then(|c| fields.get(c))
                .is_some_and(|r| r.trim().eq_ignore_ascii_case("yes"));
            by_pmcid.insert(id, (license, retracted));
        }
        Ok(LicenseFilter {
            by_pmcid,
            wanted: wanted_licenses(subset),
        })
    }

    pub fn decide(&self, pmcid: Option<u64>) -> LicenseDecision {
        let Some((license, retracted)) = pmcid.and_then(|id| self.by_pmcid.get(&id)) else {
            return LicenseDecision::NotListed;
        };
        if *retracted {
            LicenseDecision::Retracted
        } else if self.wanted.contains(&license.to_uppercase()) {
            LicenseDecision::Keep(license.clone())
        } else {
            LicenseDecision::Unwanted(license.clone())
        }
    }

    pub fn describe(&self) -> Vec<String> {
        self.wanted.iter().cloned().collect()
    }
}

fn wanted_licenses(subset: &str) -> BTreeSet<String> {
    const COMMERCIAL: &[&str] = &["CC0", "CC BY", "CC BY-SA", "CC BY-ND"];
    const NONCOMMERCIAL: &[&str] = &["CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND"];
    let mut out = BTreeSet::new();
    for item in subset.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.to_lowercase().as_str() {
            "commercial" | "comm" => out.extend(COMMERCIAL.iter().map(|s| s.to_string())),
            "noncommercial" | "noncomm" => out.extend(
                COMMERCIAL
                    .iter()
                    .chain(NONCOMMERCIAL)
                    .map(|s| s.to_string()),
            ),
            _ => {
                out.insert(item.to_uppercase());
            }
        }
    }
    out
}

/// Splits one CSV line, honouring double quotes (citations hold commas).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_accept_both_code_lengths() {
        let l = Languages::parse("eng").unwrap();
        assert!(l.accepts(&["eng".into()]));
        assert!(l.accepts(&["en".into()]));
        assert!(l.accepts(&["ita".into(), "eng".into()]));
        assert!(!l.accepts(&["ita".into()]));
        assert!(Languages::parse("all").unwrap().accepts(&["ita".into()]));
    }

    #[test]
    fn file_list_licences_and_retractions() {
        let tmp = tempfile::tempdir().unwrap();
        let csv = tmp.path().join("list.csv");
        std::fs::write(
            &csv,
            "Article File,Article Citation,AccessionID,LastUpdated (YYYY-MM-DD HH:MM:SS),PMID,License,Retracted\n\
             oa_comm/xml/PMC1.xml,\"J Biol, 2001\",PMC1,2023-01-01 00:00:00,11,CC BY,no\n\
             oa_comm/xml/PMC2.xml,J X,PMC2,2023-01-01 00:00:00,12,CC BY-NC,no\n\
             oa_comm/xml/PMC3.xml,J Y,PMC3,2023-01-01 00:00:00,13,CC BY,yes\n",
        )
        .unwrap();
        let f = LicenseFilter::load(&csv, "commercial").unwrap();
        assert!(matches!(f.decide(Some(1)), LicenseDecision::Keep(l) if l == "CC BY"));
        assert!(matches!(f.decide(Some(2)), LicenseDecision::Unwanted(_)));
        assert!(matches!(f.decide(Some(3)), LicenseDecision::Retracted));
        assert!(matches!(f.decide(Some(4)), LicenseDecision::NotListed));
    }
}
