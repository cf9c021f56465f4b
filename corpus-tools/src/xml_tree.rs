//! A streaming XML reader that hands out one record at a time as a small tree.
//!
//! NCBI files are large (a PubMed baseline file is ~150 MB of XML) but their records are
//! small, so the reader streams the file and builds a tree only for the elements asked for
//! (a `PubmedArticle`, a JATS `article`). Entities: the five XML ones, numeric character
//! references, and the HTML5 named set (JATS files use `&nbsp;`, `&ndash;`... without
//! their DTD); the external DTD is never fetched. Unknown named entities are dropped and
//! counted.
//!
//! Memory is bounded whatever the input: no run of bytes between two markup characters
//! (`<`, `>`) may exceed `MAX_EVENT_BYTES` (the XML parser buffers a whole text event, so a
//! decompression bomb of zeros or one enormous word would otherwise be read into memory
//! whole), and no record (its subtree) may exceed `MAX_RECORD_BYTES` of input. Past either,
//! the file is refused at that byte offset (`--on-error skip` keeps the records before it).
//! Real records are far smaller: the largest PMC articles are a few MB of XML, the largest
//! PubMed citations tens of KB.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};

use anyhow::{bail, Result};
use quick_xml::escape::{resolve_html5_entity, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Element {
    /// The qualified name as written (`mml:math`, `article-title`).
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    /// The name without its namespace prefix.
    pub fn local_name(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, local_name: &str) -> Option<&Element> {
        self.elements().find(|e| e.local_name() == local_name)
    }

    pub fn children_named<'a>(&'a self, local_name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements()
            .filter(move |e| e.local_name() == local_name)
    }

    /// The first element at `path` (local names, one per level).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }

    /// Every descendant (depth first) with this local name, not looking inside matches.
    pub fn descendants_named<'a>(&'a self, local_name: &str, out: &mut Vec<&'a Element>) {
        for e in self.elements() {
            if e.local_name() == local_name {
                out.push(e);
            } else {
                e.descendants_named(local_name, out);
            }
        }
    }

    /// All text below this element, concatenated as it stands.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.append_text(&mut out);
        out
    }

    fn append_text(&self, out: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => e.append_text(out),
            }
        }
    }
}

/// What `XmlStream::scan` reports.
pub enum Scan<'a> {
    Start(&'a str),
    End(&'a str),
    Element { parent: &'a str, element: Element },
}

/// Where the reader stands, for error messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position {
    pub byte: u64,
}

/// The longest run of input between two markup characters.
pub const MAX_EVENT_BYTES: u64 = 16 << 20;
/// The most input one record may span.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// A reader that fails once `MAX_EVENT_BYTES` pass without a `<` or `>`.
pub struct MarkupGuard<R> {
    inner: R,
    since_markup: u64,
    limit: u64,
}

impl<R: BufRead> MarkupGuard<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        MarkupGuard {
            inner,
            since_markup: 0,
            limit,
        }
    }

    /// Of its own kind (not InvalidData), so that it is not taken for damaged gzip data.
    fn over(&self) -> io::Error {
        io::Error::other(format!(
            "more than {} MiB of input without markup (a decompression bomb, or not NCBI XML)",
            self.limit >> 20
        ))
    }
}

impl<R: BufRead> Read for MarkupGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for MarkupGuard<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_markup > self.limit {
            return Err(self.over());
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let taken = &buf[..n.min(buf.len())];
            match taken.iter().rposition(|&b| b == b'<' || b == b'>') {
                Some(at) => self.since_markup = (taken.len() - at - 1) as u64,
                None => self.since_markup += taken.len() as u64,
            }
        }
        self.inner.consume(n);
    }
}

pub struct XmlStream<R: BufRead> {
    reader: Reader<MarkupGuard<R>>,
    buf: Vec<u8>,
    /// Open elements outside the records handed out so far (the root, a wrapper).
    depth: usize,
    root: Option<String>,
    pub unknown_entities: u64,
}

impl<R: BufRead> XmlStream<R> {
    pub fn new(input: R) -> Self {
        let mut reader = Reader::from_reader(MarkupGuard::new(input, MAX_EVENT_BYTES));
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        XmlStream {
            reader,
            buf: Vec::with_capacity(64 * 1024),
            depth: 0,
            root: None,
            unknown_entities: 0,
        }
    }

    pub fn position(&self) -> Position {
        Position {
            byte: self.reader.buffer_position(),
        }
    }

    /// The document element's name, once the first element has been read.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// Scans forward to the next element whose local name is one of `names`, at any depth,
    /// and returns it with its subtree. `Ok(None)` at a well-formed end of the document.
    pub fn next_record(&mut self, names: &[&str]) -> Result<Option<Element>> {
        loop {
            self.buf.clear();
            let event = self.reader.read_event_into(&mut self.buf)?;
            match event {
                Event::Start(start) => {
                    let name = decode_name(&start)?;
                    if self.root.is_none() {
                        self.root = Some(name.clone());
                    }
                    let local = name.rsplit(':').next().unwrap_or(&name);
                    if names.contains(&local) {
                        let start = start.into_owned();
                        return self.read_subtree(name, &start).map(Some);
                    }
                    self.depth += 1;
                }
                Event::End(_) => self.depth = self.depth.saturating_sub(1),
                Event::Text(t) if self.root.is_none() && !t.iter().all(u8::is_ascii_whitespace) => {
                    bail!("not XML: text before the first element");
                }
                Event::Eof => {
                    if self.root.is_none() {
                        bail!("not XML: no element found");
                    }
                    if self.depth > 0 {
                        bail!("unexpected end of file: the document is truncated");
                    }
                    return Ok(None);
                }
                _ => {}
            }
        }
    }

    /// Streams through the whole document for a cheap look at it: `visit` sees every
    /// element start and end by local name, and every element named in `wanted` as a tree
    /// with its parent's local name (its end is not reported separately).
    pub fn scan(
        &mut self,
        wanted: &[&str],
        mut visit: impl FnMut(Scan<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut stack: Vec<String> = Vec::new();
        loop {
            self.buf.clear();
            match self.reader.read_event_into(&mut self.buf)? {
                Event::Start(start) => {
                    let name = decode_name(&start)?;
                    if self.root.is_none() {
                        self.root = Some(name.clone());
                    }
                    let local = name.rsplit(':').next().unwrap_or(&name).to_string();
                    if wanted.contains(&local.as_str()) {
                        let start = start.into_owned();
                        let element = self.read_subtree(name, &start)?;
                        let parent = stack.last().map_or("", String::as_str);
                        visit(Scan::Element { parent, element })?;
                    } else {
                        visit(Scan::Start(&local))?;
                        stack.push(local);
                    }
                }
                Event::End(_) => {
                    if let Some(local) = stack.pop() {
                        visit(Scan::End(&local))?;
                    }
                }
                Event::Text(t) if self.root.is_none() && !t.iter().all(u8::is_ascii_whitespace) => {
                    bail!("not XML: text before the first element");
                }
                Event::Eof => {
                    if self.root.is_none() {
                        bail!("not XML: no element found");
                    }
                    if !stack.is_empty() {
                        bail!("unexpected end of file: the document is truncated");
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn read_subtree(&mut self, name: String, start: &BytesStart<'_>) -> Result<Element> {
        let first_byte = self.reader.buffer_position();
        let mut stack = vec![Element {
            name,
            attrs: attributes(start)?,
            children: Vec::new(),
        }];
        loop {
            if self.reader.buffer_position() - first_byte > MAX_RECORD_BYTES {
                bail!(
                    "a <{}> record of more than {} MiB, from byte {first_byte}: not a real record (a decompression bomb, or damaged)",
                    stack[0].name,
                    MAX_RECORD_BYTES >> 20
                );
            }
            self.buf.clear();
            match self.reader.read_event_into(&mut self.buf)? {
                Event::Start(s) => stack.push(Element {
                    name: decode_name(&s)?,
                    attrs: attributes(&s)?,
                    children: Vec::new(),
                }),
                Event::End(_) => {
                    let done = stack.pop().expect("a start precedes every end");
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::Element(done)),
                        None => return Ok(done),
                    }
                }
                Event::Text(t) => push_text(&mut stack, &t.decode()?),
                Event::CData(t) => push_text(&mut stack, &t.decode()?),
                Event::GeneralRef(r) => {
                    let resolved: Cow<'_, str> = match r.resolve_char_ref()? {
                        Some(c) => c.to_string().into(),
                        None => {
                            let name = r.decode()?;
                            match resolve_predefined_entity(&name)
                                .or_else(|| resolve_html5_entity(&name))
                            {
                                Some(s) => s.into(),
                                None => {
                                    self.unknown_entities += 1;
                                    "".into()
                                }
                            }
                        }
                    };
                    push_text(&mut stack, &resolved);
                }
                Event::Eof => bail!(
                    "unexpected end of file inside <{}>: the document is truncated",
                    stack.last().map_or("?", |e| e.name.as_str())
                ),
                _ => {}
            }
        }
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    let Some(top) = stack.last_mut() else { return };
    if let Some(Node::Text(last)) = top.children.last_mut() {
        last.push_str(text);
    } else {
        top.children.push(Node::Text(text.to_string()));
    }
}

fn decode_name(start: &BytesStart<'_>) -> Result<String> {
    Ok(String::from_utf8(start.name().as_ref().to_vec())?)
}

fn attributes(start: &BytesStart<'_>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for attr in start.attributes() {
        let attr = attr?;
        let key = String::from_utf8(attr.key.as_ref().to_vec())?;
        let value = attr
            .unescape_value_with(|e| {
                resolve_predefined_entity(e).or_else(|| resolve_html5_entity(e))
            })?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(xml: &str, names: &[&str]) -> Result<Vec<Element>> {
        let mut s = XmlStream::new(xml.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = s.next_record(names)? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn reads_records_with_entities_and_markup() {
        let xml = "<?xml version=\"1.0\"?><!DOCTYPE x SYSTEM \"http://example.org/x.dtd\">\
                   <Set><A n=\"1\">x &lt; y &#946;&#x3bc; a&nbsp;b <i>it</i></A><B/><A n=\"2\"/></Set>";
        let recs = records(xml, &["A"]).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].attr("n"), Some("1"));
        assert_eq!(recs[0].text(), "x < y βμ a\u{a0}b it");
        assert_eq!(recs[0].child("i").unwrap().text(), "it");
    }

    #[test]
    fn truncated_and_malformed_and_non_xml_are_errors() {
        assert!(records("<Set><A>x</A><A>y", &["A"]).is_err());
        assert!(records("<Set><A>x</A>", &["A"]).is_err());
        assert!(records("<Set><A>x</B></Set>", &["A"]).is_err());
        assert!(records("this is not xml", &["A"]).is_err());
        assert!(records("", &["A"]).is_err());
    }
}
