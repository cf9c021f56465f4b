//! Sentence splitting for biomedical prose, by rule.
//!
//! A boundary is a `.`, `?` or `!` (with any closing quotes or brackets after it),
//! followed by whitespace and then by something that can start a sentence: an upper-case
//! letter, a digit, or an opening bracket or quote. A period does not end a sentence when
//! the word before it is a known abbreviation (`et al.`, `e.g.`, `Fig.`, `vs.`,
//! `approx.`...), a single letter (initials, `E. coli`), or a word with inner periods
//! (`U.S.`, `i.v.`). Nothing inside parentheses or brackets is split, so `(n = 5. See
//! below)` and citation lists stay whole; decimals (`0.05`) never meet the whitespace test.

/// Lower-case, without the final period.
const ABBREVIATIONS: &[&str] = &[
    "al", "e.g", "i.e", "fig", "figs", "vs", "v", "approx", "cf", "eq", "eqs", "ref", "refs", "no",
    "nos", "vol", "vols", "pp", "p", "ch", "chap", "sect", "dr", "mr", "mrs", "ms", "prof", "st",
    "jr", "sr", "inc", "ltd", "co", "corp", "dept", "univ", "spp", "sp", "ssp", "subsp", "var",
    "cv", "ca", "resp", "viz", "ibid", "suppl", "tab", "nr", "gen", "nov", "str", "ser", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "dec", "est", "incl", "max",
    "min", "mol", "wt", "vs", "ed", "eds", "dept", "lab", "labs", "comp", "ext", "diam", "conc",
    "temp", "exp",
];

/// Brackets longer than this are taken to be unbalanced and stop suppressing splits.
const MAX_BRACKET_CHARS: usize = 400;

/// Splits a paragraph into sentences, trimmed, none empty.
pub fn split(paragraph: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
    let mut sentences = Vec::new();
    let mut start_byte = 0;
    let mut depth = 0usize;
    let mut bracket_open_at = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        match c {
            '(' | '[' => {
                if depth == 0 {
                    bracket_open_at = i;
                }
                depth += 1;
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 0 && i - bracket_open_at > MAX_BRACKET_CHARS {
            depth = 0;
        }
        let terminal = matches!(c, '.' | '?' | '!' | '\u{2026}');
        // "(A note.)": the sentence ends at the bracket that closes around its period.
        let closes_sentence =
            matches!(c, ')' | ']') && i > 0 && matches!(chars[i - 1].1, '.' | '?' | '!');
        if depth == 0 && (terminal || closes_sentence) {
            if let Some(next_start) = boundary_after(&chars, i, terminal) {
                let end_byte = chars[next_start].0;
                push_trimmed(&mut sentences, &paragraph[start_byte..end_byte]);
                start_byte = end_byte;
                i = next_start;
                continue;
            }
        }
        i += 1;
    }
    push_trimmed(&mut sentences, &paragraph[start_byte..]);
    sentences
}

fn push_trimmed(out: &mut Vec<String>, s: &str) {
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
}

/// If the terminal punctuation at `i` ends a sentence, the index where the next begins.
/// `own_period`: the character at `i` is the terminal itself, so an abbreviation check
/// applies when it is a period.
fn boundary_after(chars: &[(usize, char)], i: usize, own_period: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < chars.len() && is_closer_or_terminal(chars[j].1) {
        j += 1;
    }
    if j >= chars.len() || !chars[j].1.is_whitespace() {
        return None;
    }
    let mut k = j;
    while k < chars.len() && chars[k].1.is_whitespace() {
        k += 1;
    }
    if k >= chars.len() || !can_start_sentence(chars, k) {
        return None;
    }
    if own_period && chars[i].1 == '.' && period_is_not_final(chars, i) {
        return None;
    }
    Some(k)
}

fn is_closer_or_terminal(c: char) -> bool {
    matches!(
        c,
        '.' | '?' | '!' | '"' | '\'' | '\u{201D}' | '\u{2019}' | ')' | ']' | '\u{2026}'
    )
}

fn can_start_sentence(chars: &[(usize, char)], k: usize) -> bool {
    let c = chars[k].1;
    if c.is_uppercase() || c.is_ascii_digit() {
        return true;
    }
    if matches!(c, '(' | '[' | '"' | '\u{201C}' | '\'' | '\u{2018}') {
        return chars
            .get(k + 1)
            .is_some_and(|&(_, n)| n.is_uppercase() || n.is_ascii_digit());
    }
    false
}

/// The period at `i` belongs to an abbreviation, an initial, or a dotted word.
fn period_is_not_final(chars: &[(usize, char)], i: usize) -> bool {
    let mut s = i;
    while s > 0 && !chars[s - 1].1.is_whitespace() {
        s -= 1;
    }
    let word: String = chars[s..i]
        .iter()
        .map(|&(_, c)| c)
        .skip_while(|c| matches!(c, '(' | '[' | '"' | '\'' | '\u{201C}' | '\u{2018}'))
        .collect();
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    if word.chars().count() == 1 && letters == 1 {
        return !single_letter_ends_sentence(&word, &previous_word(chars, s));
    }
    // U.S., i.v., Ph.D: short letter groups joined by periods.
    word.contains('.')
        && letters > 0
        && word.split('.').all(|part| {
            !part.is_empty() && part.chars().count() <= 3 && part.chars().all(char::is_alphabetic)
        })
}

/// Words after which a single capital letter is a label, not an initial: "in Group B."
const LABEL_TAKERS: &[&str] = &[
    "group",
    "groups",
    "type",
    "types",
    "phase",
    "class",
    "grade",
    "stage",
    "vitamin",
    "hepatitis",
    "arm",
    "cohort",
    "zone",
    "region",
    "panel",
    "table",
    "figure",
    "appendix",
    "section",
    "part",
    "lead",
    "strain",
    "site",
    "schedule",
    "protocol",
    "model",
    "category",
];

/// A single letter is usually an initial ("J. Smith", "E. coli"), but a unit after a
/// number ("for 24 h.") or a label after a word that takes one ("in Group B.") ends a
/// sentence like any word.
fn single_letter_ends_sentence(letter: &str, previous: &str) -> bool {
    let lower_unit = letter.chars().all(char::is_lowercase)
        && previous.chars().next().is_some_and(|c| c.is_ascii_digit());
    lower_unit || LABEL_TAKERS.contains(&previous.to_lowercase().as_str())
}

/// The whitespace-delimited word that ends before index `end`.
fn previous_word(chars: &[(usize, char)], end: usize) -> String {
    let mut e = end;
    while e > 0 && chars[e - 1].1.is_whitespace() {
        e -= 1;
    }
    let mut s = e;
    while s > 0 && !chars[s - 1].1.is_whitespace() {
        s -= 1;
    }
    chars[s..e]
        .iter()
        .map(|&(_, c)| c)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ordinary_sentences() {
        assert_eq!(
            split("One here. Two there! Three? Four."),
            ["One here.", "Two there!", "Three?", "Four."]
        );
    }

    #[test]
    fn keeps_abbreviations_initials_and_decimals() {
        let p = "Smith et al. (2001) studied E. coli and S. aureus, e.g. in Fig. 2. The mean was 3.5 vs. 4.2 (p = 0.01). J. R. Smith agreed.";
        assert_eq!(
            split(p),
            [
                "Smith et al. (2001) studied E. coli and S. aureus, e.g. in Fig. 2.",
                "The mean was 3.5 vs. 4.2 (p = 0.01).",
                "J. R. Smith agreed."
            ]
        );
    }

    #[test]
    fn no_split_inside_brackets_or_before_lower_case() {
        assert_eq!(
            split("It rose (approx. 5%. See Table 1) today. next word stays."),
            ["It rose (approx. 5%. See Table 1) today. next word stays."]
        );
        assert_eq!(
            split("Done in the U.S. Army trials. Then more."),
            ["Done in the U.S. Army trials.", "Then more."]
        );
    }

    #[test]
    fn quotes_and_brackets_after_the_period_stay_with_the_sentence() {
        assert_eq!(
            split("He said \"stop.\" Then left. (A note.) Fine."),
            ["He said \"stop.\"", "Then left.", "(A note.)", "Fine."]
        );
    }

    #[test]
    fn units_and_group_labels_end_sentences() {
        assert_eq!(
            split("Doses were lower in 24 h. The block lasted longer in Group B. Time to peak was similar. J. Smith agreed."),
            ["Doses were lower in 24 h.", "The block lasted longer in Group B.", "Time to peak was similar.", "J. Smith agreed."]
        );
    }

    #[test]
    fn sentences_may_start_with_digits() {
        assert_eq!(
            split("Patients were enrolled. 25 completed the study."),
            ["Patients were enrolled.", "25 completed the study."]
        );
    }
}
