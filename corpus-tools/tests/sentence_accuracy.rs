//! The splitter against hand-checked sentences from the sample files
//! (fixtures/sentences.txt): boundary precision and recall must stay where they are.

use corpus_tools::sentences::split;

struct Block {
    paragraph: String,
    expected: Vec<String>,
}

fn blocks() -> Vec<Block> {
    let text = include_str!("fixtures/sentences.txt");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        let (raw, sentences): (Vec<&str>, Vec<&str>) =
            lines.iter().partition(|l| l.starts_with("> "));
        let expected: Vec<String> = sentences.iter().map(|s| s.to_string()).collect();
        let paragraph = match raw.first() {
            Some(r) => r[2..].to_string(),
            None => expected.join(" "),
        };
        out.push(Block {
            paragraph,
            expected,
        });
    }
    out
}

/// Boundaries as character offsets of sentence ends within the paragraph's
/// whitespace-free text, so that spacing differences do not count.
fn boundaries(sentences: &[String]) -> Vec<usize> {
    let mut at = 0;
    sentences[..sentences.len().saturating_sub(1)]
        .iter()
        .map(|s| {
            at += s.chars().filter(|c| !c.is_whitespace()).count();
            at
        })
        .collect()
}

#[test]
fn splitter_accuracy_on_hand_checked_sentences() {
    let (mut true_pos, mut predicted, mut actual, mut exact) = (0, 0, 0, 0);
    let blocks = blocks();
    for b in &blocks {
        let got = split(&b.paragraph);
        let (g, e) = (boundaries(&got), boundaries(&b.expected));
        true_pos += g.iter().filter(|x| e.contains(x)).count();
        predicted += g.len();
        actual += e.len();
        exact += usize::from(got == b.expected);
    }
    let precision = true_pos as f64 / predicted as f64;
    let recall = true_pos as f64 / actual as f64;
    println!(
        "{} paragraphs, {actual} boundaries: precision {precision:.3}, recall {recall:.3}, {exact} paragraphs exact",
        blocks.len()
    );
    assert!(actual >= 60, "the fixture lost its sentences");
    assert!(precision >= 0.99, "precision {precision:.3}");
    assert!(recall >= 0.98, "recall {recall:.3}");
}
