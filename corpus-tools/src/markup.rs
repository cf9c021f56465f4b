//! From a JATS or PubMed element to paragraphs of plain text.
//!
//! The policy, for both PubMed and PMC:
//! - inline markup (italic, bold, sup, sub, underline, small caps, links, named content)
//!   is flattened to its text with nothing added: `CO<sub>2</sub>` becomes `CO2`;
//! - inline MathML (`mml:math` in a sentence, `inline-formula`) becomes the text of its
//!   glyphs (`p < 0.05`); TeX alternatives and images of formulas are dropped;
//! - display formulas (`disp-formula`, PubMed's `DispFormula`), tables, figures, captions,
//!   supplementary material, footnotes and reference lists are dropped whole;
//! - bibliographic citations (`xref ref-type="bibr"`) are removed together with the
//!   brackets, commas and dashes that only held them, so `[1, 2]`, `(3–5)`, `(Smith 2001)`
//!   leave no debris; cross-references to figures and tables keep their words;
//! - whitespace is collapsed to single spaces; soft hyphens and zero-width spaces go.

use crate::xml_tree::{Element, Node};

/// Stands in for a removed citation until the cleanup pass.
const CITE: char = '\u{E000}';

/// Elements dropped with everything in them.
const DROPPED: &[&str] = &[
    "table-wrap",
    "table-wrap-group",
    "table",
    "fig",
    "fig-group",
    "disp-formula",
    "disp-formula-group",
    "DispFormula",
    "supplementary-material",
    "inline-supplementary-material",
    "graphic",
    "inline-graphic",
    "media",
    "ref-list",
    "fn-group",
    "fn",
    "tex-math",
    "annotation",
    "annotation-xml",
    "chem-struct-wrap",
    "preformat",
    "code",
    "label",
    "caption",
    "alt-text",
    "long-desc",
    "object-id",
    "processing-meta",
];

/// Elements that hold paragraphs rather than running text.
const BLOCKS: &[&str] = &[
    "sec",
    "p",
    "list",
    "list-item",
    "def-list",
    "def-item",
    "term",
    "def",
    "disp-quote",
    "boxed-text",
    "statement",
    "verse-group",
    "verse-line",
    "speech",
    "question",
    "answer",
    "explanation",
    "app",
    "glossary",
];

/// Section titles whose sections are not prose about the science.
const DROPPED_SECTION_TITLES: &[&str] = &[
    "abbreviations",
    "acknowledgements",
    "acknowledgments",
    "authors' contributions",
    "author contributions",
    "authors contributions",
    "competing interests",
    "conflict of interest",
    "conflicts of interest",
    "declaration of competing interest",
    "funding",
    "pre-publication history",
    "supplementary material",
    "supplementary materials",
    "supplementary data",
    "supporting information",
    "additional files",
    "electronic supplementary material",
    "availability of data and materials",
    "data availability",
    "ethics approval and consent to participate",
    "consent for publication",
];

const DROPPED_SECTION_TYPES: &[&str] = &[
    "supplementary-material",
    "COI-statement",
    "author-contributions",
    "ack",
    "data-availability",
    "funding-information",
];

/// Paragraphs of a container (a JATS `body`, `abstract`, `sec`, or one PubMed
/// `AbstractText`). Section titles are not kept: they are headings, not sentences.
pub fn paragraphs(container: &Element) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    collect_blocks(container, &mut current, &mut out);
    flush(&mut current, &mut out);
    out
}

/// One element's text as a single paragraph (a title, an `AbstractText`).
pub fn inline_text(element: &Element) -> String {
    let mut s = String::new();
    append_inline(element, &mut s);
    finish_paragraph(&s)
}

fn collect_blocks(element: &Element, current: &mut String, out: &mut Vec<String>) {
    for node in &element.children {
        match node {
            Node::Text(t) => current.push_str(t),
            Node::Element(child) => {
                let name = child.local_name();
                if is_dropped(child) || (name == "sec" && is_dropped_section(child)) {
                    continue;
                }
                if name == "title" && element.local_name() != "p" {
                    flush(current, out);
                    continue;
                }
                if BLOCKS.contains(&name) {
                    flush(current, out);
                    collect_blocks(child, current, out);
                    flush(current, out);
                } else {
                    append_inline(child, current);
                }
            }
        }
    }
}

fn append_inline(element: &Element, out: &mut String) {
    if is_dropped(element) {
        return;
    }
    if matches!(element.local_name(), "sub" | "sup") {
        drop_pretty_printing_break(out);
    }
    if is_citation(element) {
        out.push(CITE);
        return;
    }
    for node in &element.children {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Element(child) => append_inline(child, out),
        }
    }
}

/// A line break and indentation right before `<sub>`/`<sup>` comes from a pretty-printer
/// (`&#946;\n\t\t<sub>2</sub>` is "β2"), not from the author.
fn drop_pretty_printing_break(out: &mut String) {
    let trimmed = out.trim_end_matches([' ', '\t', '\n', '\r']);
    if out[trimmed.len()..].contains('\n') {
        out.truncate(trimmed.len());
    }
}

fn is_dropped(element: &Element) -> bool {
    DROPPED.contains(&element.local_name())
        || (element.local_name() == "math" && element.attr("display") == Some("block"))
}

fn is_citation(element: &Element) -> bool {
    element.local_name() == "xref" && element.attr("ref-type") == Some("bibr")
}

pub fn is_dropped_section(sec: &Element) -> bool {
    if sec
        .attr("sec-type")
        .is_some_and(|t| DROPPED_SECTION_TYPES.contains(&t))
    {
        return true;
    }
    let Some(title) = sec.child("title") else {
        return false;
    };
    let title = title
        .text()
        .trim()
        .trim_end_matches([':', '.'])
        .to_lowercase();
    let title = title.replace('\u{2019}', "'");
    DROPPED_SECTION_TITLES.contains(&title.as_str())
}

fn flush(current: &mut String, out: &mut Vec<String>) {
    let p = finish_paragraph(current);
    if !p.is_empty() {
        out.push(p);
    }
    current.clear();
}

/// Citation cleanup, then whitespace normalisation.
fn finish_paragraph(raw: &str) -> String {
    let text = if raw.contains(CITE) {
        remove_citations(raw)
    } else {
        raw.to_string()
    };
    normalize_whitespace(&text)
}

/// Collapses whitespace runs (including no-break spaces) to one space, drops soft hyphens
/// and zero-width characters, and trims.
pub fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if matches!(
            c,
            '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}'
        ) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// Removes citation placeholders and the punctuation that only held them.
fn remove_citations(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut keep = vec![true; chars.len()];
    // 1. Bracket groups that hold citations and nothing but separators.
    let mut stack: Vec<usize> = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '(' | '[' => stack.push(i),
            ')' | ']' => {
                if let Some(open) = stack.pop() {
                    let inner = &chars[open + 1..i];
                    if inner.contains(&CITE) && only_citation_debris(inner) {
                        keep[open..=i].iter_mut().for_each(|k| *k = false);
                    }
                }
            }
            _ => {}
        }
    }
    // 2. Bare citations.
    for i in 0..chars.len() {
        if chars[i] == CITE {
            keep[i] = false;
        }
    }
    // 3. Separators left between removed spans ("1,2", "3–5", "[1], [2]"), or between a
    //    removed span and the bracket around it ("[[39], their figure five]").
    let spans = removed_spans(&keep);
    for (n, &(start, end)) in spans.iter().enumerate() {
        let mut after = end;
        while after < chars.len() && is_separator(chars[after]) {
            after += 1;
        }
        let next_span = spans.get(n + 1).is_some_and(|&(s, _)| s == after);
        let opens = last_kept(&chars, &keep, start).is_some_and(|c| matches!(c, '(' | '['));
        if next_span || opens {
            keep[end..after].iter_mut().for_each(|k| *k = false);
        }
        if after < chars.len() && keep[after] && matches!(chars[after], ')' | ']') {
            let mut b = start;
            while b > 0 && is_separator(chars[b - 1]) {
                b -= 1;
                keep[b] = false;
            }
        }
    }
    let kept: String = chars
        .iter()
        .zip(&keep)
        .filter_map(|(&c, &k)| k.then_some(c))
        .collect();
    tidy_punctuation(&kept)
}

/// Maximal runs of removed characters, as [start, end).
fn removed_spans(keep: &[bool]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < keep.len() {
        if keep[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < keep.len() && !keep[i] {
            i += 1;
        }
        spans.push((start, i));
    }
    spans
}

/// The nearest kept character before `i` that is not whitespace.
fn last_kept(chars: &[char], keep: &[bool], i: usize) -> Option<char> {
    (0..i)
        .rev()
        .find(|&k| keep[k] && !chars[k].is_whitespace())
        .map(|k| chars[k])
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';' | '-' | '\u{2013}' | '\u{2014}' | '\u{2010}' | '\u{2011}'
        )
}

fn only_citation_debris(inner: &[char]) -> bool {
    let words: String = inner
        .iter()
        .map(|&c| if c == CITE || is_separator(c) { ' ' } else { c })
        .collect();
    let rest = normalize_whitespace(&words).to_lowercase();
    rest.split(' ')
        .all(|w| w.is_empty() || w == "and" || w == "&")
        || CITATION_LEAD_INS.contains(&rest.as_str())
}

/// Words that only introduce a citation inside its brackets: "(see 4)", "(reviewed in 5)".
const CITATION_LEAD_INS: &[&str] = &[
    "see",
    "see also",
    "e.g.",
    "e.g.,",
    "cf.",
    "ref.",
    "refs.",
    "reviewed in",
    "for review see",
    "for a review see",
    "and references therein",
];

/// Drops the space the removal left before punctuation: "shown [1]." -> "shown ." -> "shown.".
fn tidy_punctuation(text: &str) -> String {
    let collapsed = normalize_whitespace(text);
    let mut out = String::with_capacity(collapsed.len());
    let mut chars = collapsed.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' '
            && chars
                .peek()
                .is_some_and(|n| matches!(n, '.' | ',' | ';' | ':' | ')' | ']'))
        {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml_tree::XmlStream;

    fn element(xml: &str) -> Element {
        XmlStream::new(xml.as_bytes())
            .next_record(&["x"])
            .unwrap()
            .unwrap()
    }

    #[test]
    fn inline_markup_is_flattened_without_spaces() {
        let e = element(
            "<x>CO<sub>2</sub> and 10<sup>-3</sup> M <i>E. coli</i>  cells\n were <b>fine</b>.</x>",
        );
        assert_eq!(inline_text(&e), "CO2 and 10-3 M E. coli cells were fine.");
        let e = element("<x>a fast-acting &#946;\n\t\t\t<sub>2</sub>-agonist</x>");
        assert_eq!(inline_text(&e), "a fast-acting β2-agonist");
    }

    #[test]
    fn citations_leave_no_debris() {
        let cases = [
            ("<x>as shown [<xref ref-type=\"bibr\">1</xref>, <xref ref-type=\"bibr\">2</xref>].</x>", "as shown."),
            ("<x>as shown <xref ref-type=\"bibr\">1</xref>&#x2013;<xref ref-type=\"bibr\">3</xref>, and more.</x>", "as shown, and more."),
            ("<x>known (<xref ref-type=\"bibr\">Smith et al., 2001</xref>; <xref ref-type=\"bibr\">Jones, 2002</xref>) to bind.</x>", "known to bind."),
            ("<x>seen in mice<sup><xref ref-type=\"bibr\">4</xref></sup>.</x>", "seen in mice."),
            ("<x>see (<xref ref-type=\"fig\">Figure 1</xref>) here</x>", "see (Figure 1) here"),
            ("<x>both (reviewed in <xref ref-type=\"bibr\">5</xref>) and</x>", "both and"),
            ("<x>also convex [<xref ref-type=\"bibr\">9</xref>, their figure five].</x>", "also convex [their figure five]."),
            ("<x>units [<xref ref-type=\"bibr\">3</xref>, pp. 57-59].</x>", "units [pp. 57-59]."),
            ("<x>and tKCN [[<xref ref-type=\"bibr\">39</xref>], their figure five].</x>", "and tKCN [their figure five]."),
            ("<x>shown [<xref ref-type=\"bibr\">1</xref>], [<xref ref-type=\"bibr\">2</xref>].</x>", "shown."),
        ];
        for (xml, want) in cases {
            assert_eq!(inline_text(&element(xml)), want, "{xml}");
        }
    }

    #[test]
    fn blocks_become_paragraphs_and_floats_are_dropped() {
        let xml = "<x><sec><title>Intro</title><p>First para.<table-wrap><caption><p>Table 1</p></caption></table-wrap> Still first.</p>\
                   <p>Second <disp-formula>E=mc2</disp-formula>para.</p>\
                   <p>A list:<list><list-item><p>one</p></list-item><list-item><p>two</p></list-item></list></p></sec>\
                   <sec><title>Competing interests</title><p>None.</p></sec></x>";
        assert_eq!(
            paragraphs(&element(xml)),
            [
                "First para. Still first.",
                "Second para.",
                "A list:",
                "one",
                "two"
            ]
        );
    }

    #[test]
    fn inline_math_keeps_its_glyphs_and_drops_tex() {
        let xml = "<x>with <inline-formula><alternatives><mml:math><mml:mi>p</mml:mi><mml:mo>&lt;</mml:mo><mml:mn>0.05</mml:mn></mml:math><tex-math>p&lt;0.05</tex-math></alternatives></inline-formula> overall</x>";
        assert_eq!(inline_text(&element(xml)), "with p<0.05 overall");
    }
}
