//! PMC articles: JATS XML (`.nxml`, `.xml`, efetch's `<pmc-articleset>` wrapper) and the
//! plain-text OA format (`==== Front` / `==== Body` / `==== Refs`).
//!
//! Kept: the title, every abstract (the author summary of PLoS journals too, but not
//! graphical abstracts or translated ones), and the body's paragraphs in order. Dropped:
//! the back matter (references, acknowledgements, appendices), tables, figures, captions,
//! formulas, supplementary material, and body sections that are not prose (competing
//! interests, authors' contributions...): see `markup`.

use std::io::BufRead;

use anyhow::{bail, Context, Result};

use crate::markup;
use crate::xml_tree::{Element, Scan, XmlStream};

const ROOTS: &[&str] = &["article", "pmc-articleset"];
const DROPPED_ABSTRACT_TYPES: &[&str] = &["graphical", "teaser", "toc", "web-summary"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PmcArticle {
    /// `PMC1234567`, or the PMID / file name when the article carries no PMC id.
    pub id: String,
    pub pmcid: Option<u64>,
    pub pmid: Option<u64>,
    pub title: String,
    pub abstracts: Vec<String>,
    pub body: Vec<String>,
    /// The licence URL (`xlink:href` or `ali:license_ref`), else its `license-type`.
    pub license: Option<String>,
    /// `xml:lang` of the article (ISO 639-1), `en` when absent.
    pub language: String,
    pub article_type: Option<String>,
}

impl PmcArticle {
    pub fn paragraphs(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.title)
            .filter(|t| !t.is_empty())
            .chain(&self.abstracts)
            .chain(&self.body)
    }
}

pub struct JatsReader<R: BufRead> {
    stream: XmlStream<R>,
    records: u64,
}

impl<R: BufRead> JatsReader<R> {
    pub fn new(input: R) -> Self {
        JatsReader {
            stream: XmlStream::new(input),
            records: 0,
        }
    }

    pub fn next_article(&mut self) -> Result<Option<PmcArticle>> {
        let where_ = |s: &Self| {
            format!(
                "article {}, byte {}",
                s.records + 1,
                s.stream.position().byte
            )
        };
        let element = self
            .stream
            .next_record(&["article"])
            .with_context(|| where_(self))?;
        let root = self.stream.root().unwrap_or("");
        if !ROOTS.contains(&root) {
            bail!("expected a JATS <article> or <pmc-articleset> document, found <{root}>");
        }
        let Some(element) = element else {
            return Ok(None);
        };
        self.records += 1;
        Ok(Some(parse_article(&element)))
    }

    pub fn unknown_entities(&self) -> u64 {
        self.stream.unknown_entities
    }
}

/// The PMC id of each article of a JATS document, in order, without building the articles
/// (the ledger pass); `None` for an article without one.
pub fn scan_ids<R: BufRead>(input: R, mut visit: impl FnMut(Option<u64>)) -> Result<()> {
    let mut stream = XmlStream::new(input);
    let mut checked_root = false;
    let mut current: Option<Option<u64>> = None;
    stream.scan(&["article-id"], |event| {
        match event {
            Scan::Start(name) => {
                if !checked_root {
                    checked_root = true;
                    if !ROOTS.contains(&name) {
                        bail!("expected a JATS <article> or <pmc-articleset> document, found <{name}>");
                    }
                }
                if name == "article" {
                    current = Some(None);
                }
            }
            Scan::Element { parent: "article-meta", element } => {
                let kind = element.attr("pub-id-type").unwrap_or("");
                if let (Some(slot @ None), "pmc" | "pmcid") = (current.as_mut(), kind) {
                    *slot = element.text().trim().trim_start_matches("PMC").parse().ok();
                }
            }
            Scan::End("article") => {
                if let Some(id) = current.take() {
                    visit(id);
                }
            }
            _ => {}
        }
        Ok(())
    })
}

pub fn parse_article(article: &Element) -> PmcArticle {
    let meta = article.at(&["front", "article-meta"]);
    let id_of = |kind: &[&str]| {
        meta.into_iter()
            .flat_map(|m| m.children_named("article-id"))
            .find(|id| id.attr("pub-id-type").is_some_and(|t| kind.contains(&t)))
            .map(|id| id.text().trim().to_string())
    };
    let pmcid = id_of(&["pmc", "pmcid"]).and_then(|s| s.trim_start_matches("PMC").parse().ok());
    let pmid = id_of(&["pmid"]).and_then(|s| s.parse().ok());
    let id = match (pmcid, pmid) {
        (Some(n), _) => format!("PMC{n}"),
        (None, Some(p)) => format!("PMID{p}"),
        (None, None) => String::new(),
    };
    let title = meta
        .and_then(|m| m.at(&["title-group", "article-title"]))
        .map(markup::inline_text)
        .unwrap_or_default();
    let abstracts = meta
        .map(|m| {
            m.children_named("abstract")
                .filter(|a| {
                    !a.attr("abstract-type")
                        .is_some_and(|t| DROPPED_ABSTRACT_TYPES.contains(&t))
                })
                .flat_map(markup::paragraphs)
                .collect()
        })
        .unwrap_or_default();
    let body = article
        .child("body")
        .map(markup::paragraphs)
        .unwrap_or_default();
    let license = meta
        .and_then(|m| m.at(&["permissions", "license"]))
        .and_then(|l| {
            l.attr("xlink:href")
                .map(str::to_string)
                .or_else(|| license_ref(l))
                .or_else(|| l.attr("license-type").map(str::to_string))
        });
    PmcArticle {
        id,
        pmcid,
        pmid,
        title,
        abstracts,
        body,
        license,
        language: article
            .attr("xml:lang")
            .unwrap_or("en")
            .trim()
            .to_lowercase(),
        article_type: article.attr("article-type").map(str::to_string),
    }
}

fn license_ref(license: &Element) -> Option<String> {
    let mut refs = Vec::new();
    license.descendants_named("license_ref", &mut refs);
    refs.first()
        .map(|r| r.text().trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The PMC OA plain-text format. Its Front is unlabelled metadata lines, so the policy is:
/// the PMC id from a `PMC\d+` line; abstract paragraphs are the Front's prose lines (20
/// words or more, ending in punctuation); the Body's lines are paragraphs, except short
/// lines without final punctuation (headings); the Refs are dropped.
pub fn parse_oa_text(text: &str, fallback_id: &str) -> Result<PmcArticle> {
    let front_at = text
        .find("==== Front")
        .context("no '==== Front' line: not a PMC OA text file")?;
    let body_at = text[front_at..]
        .find("==== Body")
        .map(|i| i + front_at)
        .context("no '==== Body' line")?;
    let refs_at = text[body_at..]
        .find("==== Refs")
        .map_or(text.len(), |i| i + body_at);
    let front = &text[front_at + "==== Front".len()..body_at];
    let body = &text[body_at + "==== Body".len()..refs_at];
    let pmcid = front
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("PMC").and_then(|n| n.parse::<u64>().ok()));
    let prose = |l: &&str| l.ends_with(['.', '?', '!', ')', ']', '"']);
    let abstracts = front
        .lines()
        .map(markup::normalize_whitespace)
        .filter(|l| l.split(' ').count() >= 20 && prose(&l.as_str()))
        .collect();
    let body = body
        .lines()
        .map(markup::normalize_whitespace)
        .filter(|l| !l.is_empty() && (prose(&l.as_str()) || l.split(' ').count() > 12))
        .collect();
    Ok(PmcArticle {
        id: pmcid.map_or_else(|| fallback_id.to_string(), |n| format!("PMC{n}")),
        pmcid,
        language: "en".into(),
        abstracts,
        body,
        ..PmcArticle::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jats_article_keeps_title_abstracts_body_and_licence() {
        let xml = r#"<pmc-articleset><article article-type="research-article" xmlns:xlink="http://www.w3.org/1999/xlink">
          <front><article-meta><article-id pub-id-type="pmid">42</article-id><article-id pub-id-type="pmc">PMC7</article-id>
          <title-group><article-title>The <italic>title</italic></article-title></title-group>
          <permissions><license license-type="open-access" xlink:href="http://creativecommons.org/licenses/by/4.0/"><p>CC BY</p></license></permissions>
          <abstract><sec><title>Background</title><p>Abstract one.</p></sec></abstract>
          <abstract abstract-type="summary"><p>Summary two.</p></abstract>
          <abstract abstract-type="graphical"><p>Graphical.</p></abstract></article-meta></front>
          <body><sec><title>Introduction</title><p>Body text [<xref ref-type="bibr" rid="B1">1</xref>].</p></sec></body>
          <back><ref-list><ref><mixed-citation>A ref.</mixed-citation></ref></ref-list></back></article></pmc-articleset>"#;
        let mut r = JatsReader::new(xml.as_bytes());
        let a = r.next_article().unwrap().unwrap();
        assert!(r.next_article().unwrap().is_none());
        assert_eq!(a.id, "PMC7");
        assert_eq!((a.pmcid, a.pmid), (Some(7), Some(42)));
        assert_eq!(a.title, "The title");
        assert_eq!(a.abstracts, ["Abstract one.", "Summary two."]);
        assert_eq!(a.body, ["Body text."]);
        assert_eq!(
            a.license.as_deref(),
            Some("http://creativecommons.org/licenses/by/4.0/")
        );
    }

    #[test]
    fn oa_text_front_body_refs() {
        let text = "==== Front\nBMC Biol\nPMC1234\n10.1186/x\nA Title\nThis abstract sentence has quite a lot of words in it so that it counts as prose and not a metadata line at all.\n==== Body\nBackground\nThe body paragraph is here.\n==== Refs\nSmith J. A paper. 2001.\n";
        let a = parse_oa_text(text, "file").unwrap();
        assert_eq!(a.id, "PMC1234");
        assert_eq!(a.abstracts.len(), 1);
        assert_eq!(a.body, ["The body paragraph is here."]);
    }
}
