//! PubMed / MEDLINE XML: baseline and update files, both the current `PubmedArticleSet`
//! root and the legacy `MedlineCitationSet` one, read a record at a time.

use std::io::BufRead;

use anyhow::{bail, Context, Result};

use crate::markup;
use crate::xml_tree::{Element, Scan, XmlStream};

/// The elements read as records. `PubmedArticle` holds a `MedlineCitation`; in the legacy
/// set `MedlineCitation` stands alone.
const RECORDS: &[&str] = &[
    "PubmedArticle",
    "MedlineCitation",
    "DeleteCitation",
    "PubmedBookArticle",
];
const ROOTS: &[&str] = &["PubmedArticleSet", "MedlineCitationSet"];

#[derive(Debug, Clone, PartialEq)]
pub struct AbstractSection {
    /// The `Label` attribute (`METHODS`), absent for unstructured abstracts.
    pub label: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Citation {
    pub pmid: u64,
    pub version: u32,
    pub title: String,
    pub sections: Vec<AbstractSection>,
    /// MEDLINE language codes (`eng`, `ita`), as many as the record gives.
    pub languages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Citation(Citation),
    /// `DeleteCitation`: these PMIDs are withdrawn.
    Delete(Vec<u64>),
    /// A `PubmedBookArticle` (NCBI Bookshelf): not a journal abstract, skipped.
    Book,
}

pub struct PubmedReader<R: BufRead> {
    stream: XmlStream<R>,
    records: u64,
    last_pmid: Option<u64>,
}

impl<R: BufRead> PubmedReader<R> {
    pub fn new(input: R) -> Self {
        PubmedReader {
            stream: XmlStream::new(input),
            records: 0,
            last_pmid: None,
        }
    }

    /// The next record, or `None` at the end. Errors say which record and byte.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let element = self
            .stream
            .next_record(RECORDS)
            .with_context(|| self.where_(self.records + 1))?;
        let root = self.stream.root().unwrap_or("");
        if !ROOTS.contains(&root) {
            bail!("expected a PubmedArticleSet or MedlineCitationSet document, found <{root}>");
        }
        let Some(element) = element else {
            return Ok(None);
        };
        self.records += 1;
        let record = parse_record(&element).with_context(|| self.where_(self.records))?;
        if let Record::Citation(c) = &record {
            self.last_pmid = Some(c.pmid);
        }
        Ok(Some(record))
    }

    pub fn unknown_entities(&self) -> u64 {
        self.stream.unknown_entities
    }

    pub fn byte_position(&self) -> u64 {
        self.stream.position().byte
    }

    fn where_(&self, record: u64) -> String {
        let after = self
            .last_pmid
            .map_or(String::new(), |p| format!(", after PMID {p}"));
        format!(
            "record {record}{after}, byte {}",
            self.stream.position().byte
        )
    }
}

/// The ids of a PubMed file in order, without building its records (the ledger pass):
/// `Some(pmid)` for each citation, and the PMIDs of `DeleteCitation`s.
pub fn scan_ids<R: BufRead>(input: R, mut visit: impl FnMut(IdEvent)) -> Result<()> {
    let mut stream = XmlStream::new(input);
    let mut checked_root = false;
    // Records are numbered as `PubmedReader` numbers them, for the same error messages.
    let (mut records, mut in_article) = (0u64, false);
    let (mut pmid, mut last_pmid) = (None, None);
    let result = stream.scan(&["PMID"], |event| {
        match event {
            Scan::Start(name) => {
                if !checked_root {
                    checked_root = true;
                    if !ROOTS.contains(&name) {
                        bail!("expected a PubmedArticleSet or MedlineCitationSet document, found <{name}>");
                    }
                }
                match name {
                    "PubmedArticle" => (records, in_article) = (records + 1, true),
                    "MedlineCitation" if !in_article => records += 1,
                    "DeleteCitation" | "PubmedBookArticle" => records += 1,
                    _ => {}
                }
            }
            Scan::End(name @ ("PubmedArticle" | "MedlineCitation")) => {
                in_article &= name != "PubmedArticle";
                last_pmid = pmid.or(last_pmid);
            }
            Scan::Element { parent: "MedlineCitation", element } => {
                let id = parse_pmid(&element.text())?;
                pmid = Some(id);
                visit(IdEvent::Citation(id));
            }
            Scan::Element { parent: "DeleteCitation", element } => {
                visit(IdEvent::Delete(parse_pmid(&element.text())?))
            }
            _ => {}
        }
        Ok(())
    });
    result.with_context(|| {
        let after = last_pmid.map_or(String::new(), |p| format!(", after PMID {p}"));
        format!("record {records}{after}, byte {}", stream.position().byte)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdEvent {
    Citation(u64),
    Delete(u64),
}

pub fn parse_record(e: &Element) -> Result<Record> {
    match e.local_name() {
        "DeleteCitation" => {
            let pmids = e
                .children_named("PMID")
                .map(|p| parse_pmid(&p.text()))
                .collect::<Result<Vec<_>>>()?;
            Ok(Record::Delete(pmids))
        }
        "PubmedBookArticle" => Ok(Record::Book),
        "PubmedArticle" => {
            let citation = e
                .child("MedlineCitation")
                .context("PubmedArticle without MedlineCitation")?;
            parse_citation(citation).map(Record::Citation)
        }
        _ => parse_citation(e).map(Record::Citation),
    }
}

fn parse_citation(c: &Element) -> Result<Citation> {
    let pmid_element = c.child("PMID").context("MedlineCitation without PMID")?;
    let pmid = parse_pmid(&pmid_element.text())?;
    let version = pmid_element
        .attr("Version")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let article = c.child("Article");
    let title = article
        .and_then(|a| a.child("ArticleTitle"))
        .map(markup::inline_text)
        .unwrap_or_default();
    let sections = article
        .and_then(|a| a.child("Abstract"))
        .map(abstract_sections)
        .unwrap_or_default();
    let languages = article
        .map(|a| {
            a.children_named("Language")
                .map(|l| l.text().trim().to_lowercase())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(Citation {
        pmid,
        version,
        title,
        sections,
        languages,
    })
}

/// The `AbstractText` sections; `CopyrightInformation` beside them is not abstract text.
fn abstract_sections(abstract_: &Element) -> Vec<AbstractSection> {
    abstract_
        .children_named("AbstractText")
        .map(|t| AbstractSection {
            label: t
                .attr("Label")
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && l != "UNLABELLED"),
            text: markup::inline_text(t),
        })
        .filter(|s| !s.text.is_empty())
        .collect()
}

fn parse_pmid(text: &str) -> Result<u64> {
    text.trim()
        .parse()
        .with_context(|| format!("PMID {:?} is not a number", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(xml: &str) -> Result<Vec<Record>> {
        let mut r = PubmedReader::new(xml.as_bytes());
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn structured_abstract_with_markup_and_deletion() {
        let xml = r#"<PubmedArticleSet><PubmedArticle><MedlineCitation Status="MEDLINE">
            <PMID Version="2">123</PMID><Article><ArticleTitle>A <i>title</i>.</ArticleTitle>
            <Abstract><AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">CO<sub>2</sub> rises.</AbstractText>
            <AbstractText Label="RESULTS">It fell.</AbstractText><CopyrightInformation>(c) 2020</CopyrightInformation></Abstract>
            <Language>eng</Language></Article>
            <CommentsCorrectionsList><CommentsCorrections><PMID>999</PMID></CommentsCorrections></CommentsCorrectionsList>
            </MedlineCitation></PubmedArticle>
            <DeleteCitation><PMID Version="1">5</PMID><PMID Version="1">6</PMID></DeleteCitation></PubmedArticleSet>"#;
        let recs = read_all(xml).unwrap();
        let Record::Citation(c) = &recs[0] else {
            panic!()
        };
        assert_eq!((c.pmid, c.version), (123, 2));
        assert_eq!(c.title, "A title.");
        assert_eq!(c.sections.len(), 2);
        assert_eq!(c.sections[0].label.as_deref(), Some("BACKGROUND"));
        assert_eq!(c.sections[0].text, "CO2 rises.");
        assert_eq!(c.languages, ["eng"]);
        assert_eq!(recs[1], Record::Delete(vec![5, 6]));
    }

    #[test]
    fn legacy_root_and_wrong_root() {
        let legacy = "<MedlineCitationSet><MedlineCitation><PMID>7</PMID></MedlineCitation></MedlineCitationSet>";
        assert_eq!(read_all(legacy).unwrap().len(), 1);
        let err = read_all("<article><front/></article>").unwrap_err();
        assert!(format!("{err:#}").contains("PubmedArticleSet"), "{err:#}");
    }

    #[test]
    fn bad_pmid_names_the_record() {
        let xml = "<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>12</PMID></MedlineCitation></PubmedArticle>\
                   <PubmedArticle><MedlineCitation><PMID>x1</PMID></MedlineCitation></PubmedArticle></PubmedArticleSet>";
        let err = format!("{:#}", read_all(xml).unwrap_err());
        assert!(err.contains("record 2, after PMID 12"), "{err}");
    }
}
