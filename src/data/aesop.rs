//! Aesop's Fables as the paper's sequence data (E8, early version §4.1): 248 strings of 100
//! characters over a 30-symbol alphabet (a–z, space, comma, semicolon, full stop).
//!
//! The paper names no edition. We use Project Gutenberg #19994, *The Aesop for Children*
//! (1919), the edition the one public reimplementation downloads ([HP] in PAPER.md), from
//! `aesop/pg19994/19994.txt` (checked by SHA-256). Cleaning, in order: keep the text between the
//! `*** START OF` and `*** END OF` lines; start at the first fable (the line `THE WOLF AND THE
//! KID`, skipping the credits and the list of fables); drop `[Illustration: ...]` notes;
//! lowercase; turn whitespace into spaces; drop every other character outside the alphabet;
//! squeeze repeated spaces; trim. The strings are the first 248 consecutive 100-character slices
//! of that text (24,800 of its ~135,000 characters), so the set is fixed by the file alone.
//! An independent Python version of the same recipe gave the same SHA-256 (tests/aesop.rs).

use std::path::Path;

use super::{read_verified, DataError, Labelled, Split};

/// The 30 symbols, in index order.
pub const ALPHABET: &[u8; 30] = b"abcdefghijklmnopqrstuvwxyz ,;.";
/// The line where the fables start in this edition (before it: credits and the list of fables).
pub const FIRST_FABLE: &str = "THE WOLF AND THE KID";
/// Strings in the set.
pub const STRINGS: usize = 248;
/// Characters per string.
pub const LENGTH: usize = 100;
/// The edition's file and its SHA-256 (`../shared/data/aesop/SHA256SUMS`).
pub const FILE: (&str, &str) =
    ("aesop/pg19994/19994.txt", "b5a04fa4bc33d782d3dc886e26b6be760a3c3f4c76da4ae9969b9411e290702e");

/// Symbols in the alphabet (the classes of next-character prediction).
pub const SYMBOLS: usize = ALPHABET.len();
/// The first characters of every string that are given, never predicted (the paper's 10).
pub const GIVEN: usize = 10;
/// Characters of context before the predicted one: the window is 10 characters, the context
/// and the predicted (or candidate) one, 10 x 30 = 300 one-hot values as in the paper.
pub const CONTEXT: usize = 9;
/// Predicted characters per string (positions 10..100).
pub const PREDICTED: usize = LENGTH - GIVEN;
/// Row width: the predicted character's 30 slots first (where the head writes a label, as in
/// MNIST's label pixels), then the 9 context characters one-hot, oldest first.
pub const WIDTH: usize = SYMBOLS * (CONTEXT + 1);
/// Strings that train (the first 200 of the text), validate (the next 24) and test (the
/// last 24). The paper trains on all 248 and names no held-out set; we keep one to choose on.
pub const TRAIN_STRINGS: usize = 200;
/// See [`TRAIN_STRINGS`].
pub const VALIDATION_STRINGS: usize = 24;

/// Writes the one-hot context (`CONTEXT` symbols, oldest first) into a row of `WIDTH` bytes;
/// the label slots are left as they are.
pub fn context_into(context: &[u8], row: &mut [u8]) {
    debug_assert_eq!(context.len(), CONTEXT);
    row[SYMBOLS..].fill(0);
    for (k, &c) in context.iter().enumerate() {
        row[SYMBOLS * (k + 1) + c as usize] = u8::MAX;
    }
}

/// The rows of some strings: for each string, and each predicted position `t` in 10..100, the
/// context `s[t-9..t]` with class `s[t]`. Row `i * PREDICTED + (t - GIVEN)` is string `i`'s `t`.
pub fn windows(strings: &[Vec<u8>]) -> Split {
    let mut images = vec![0u8; strings.len() * PREDICTED * WIDTH];
    let mut labels = Vec::with_capacity(strings.len() * PREDICTED);
    for (row, (s, t)) in
        images.chunks_exact_mut(WIDTH).zip(strings.iter().flat_map(|s| (GIVEN..LENGTH).map(move |t| (s, t))))
    {
        context_into(&s[t - CONTEXT..t], row);
        labels.push(s[t]);
    }
    Split { images, labels }
}

/// The error, in percent, on `eval` of always predicting the commonest class of `train` (the
/// character-frequency baseline).
pub fn unigram_error_pct(train: &Split, eval: &Split) -> f64 {
    let mut counts = [0usize; SYMBOLS];
    train.labels.iter().for_each(|&c| counts[c as usize] += 1);
    let commonest = (0..SYMBOLS).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0) as u8;
    let wrong = eval.labels.iter().filter(|&&c| c != commonest).count();
    100.0 * wrong as f64 / eval.len().max(1) as f64
}

/// The 248 strings as symbol indices (0..30).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aesop {
    /// `STRINGS` strings of `LENGTH` symbol indices each.
    pub strings: Vec<Vec<u8>>,
}

/// The index of a symbol of the alphabet.
pub fn symbol(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|i| i as u8)
}

/// The text of symbol indices.
pub fn text(symbols: &[u8]) -> String {
    symbols.iter().map(|&s| ALPHABET[s as usize] as char).collect()
}

/// The cleaning described in the module doc, on a whole Gutenberg file.
pub fn clean(raw: &str) -> String {
    let body = raw.split_once("*** START OF").and_then(|(_, rest)| rest.split_once('\n')).map_or(raw, |(_, rest)| rest);
    let body = body.split_once("*** END OF").map_or(body, |(text, _)| text);
    // `split` rather than `lines`: the offsets must count the `\r` of CRLF line ends.
    let start = body.split('\n').scan(0, |offset, line| {
        let at = *offset;
        *offset += line.len() + 1;
        Some((at, line.trim()))
    });
    let body = start.filter(|(_, line)| *line == FIRST_FABLE).map(|(at, _)| &body[at..]).next().unwrap_or(body);
    let mut out = String::with_capacity(body.len());
    let mut bracket = false;
    for c in body.chars() {
        // Illustration notes are in brackets; they are not the fables' text.
        match c {
            '[' => bracket = true,
            ']' if bracket => {
                bracket = false;
                continue;
            }
            _ => {}
        }
        if bracket {
            continue;
        }
        let c = c.to_ascii_lowercase();
        let c = if c.is_whitespace() { ' ' } else { c };
        if c.is_ascii() && symbol(c as u8).is_some() && !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out.trim().to_string()
}

impl Aesop {
    /// Loads and verifies the edition's file from the data search path and builds the strings.
    pub fn load(data_dir: Option<&Path>) -> Result<Aesop, DataError> {
        let (file, sha) = FILE;
        let bytes = read_verified("Aesop's Fables", file, sha, data_dir)?;
        Ok(Aesop::from_text(&String::from_utf8_lossy(&bytes)))
    }

    /// The strings cut into next-character rows: training, validation and test strings (see
    /// [`TRAIN_STRINGS`]), with the training strings kept for self-generated negatives.
    pub fn labelled(&self) -> Labelled {
        let (train, rest) = self.strings.split_at(TRAIN_STRINGS.min(self.strings.len()));
        let (validation, test) = rest.split_at(VALIDATION_STRINGS.min(rest.len()));
        Labelled {
            train: windows(train),
            validation: windows(validation),
            test: windows(test),
            classes: SYMBOLS,
            sequences: train.to_vec(),
        }
    }

    /// The strings of a raw Gutenberg text (fewer than 248 if the text is short).
    pub fn from_text(raw: &str) -> Aesop {
        let symbols: Vec<u8> = clean(raw).bytes().filter_map(symbol).collect();
        let strings = symbols.chunks_exact(LENGTH).take(STRINGS).map(<[u8]>::to_vec).collect();
        Aesop { strings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_keeps_the_alphabet_and_one_space() {
        let raw = "header\r\n*** START OF THE BOOK ***\r\nContents\r\nTHE WOLF AND THE KID\r\nThe Fox,  and\r\n\tthe [Illustration: a fox] GRAPES!\r\n\"Sour\"; he said.\r\n*** END OF THE BOOK ***\r\nlicence";
        assert_eq!(clean(raw), "the wolf and the kid the fox, and the grapes sour; he said.");
    }

    #[test]
    fn windows_hold_nine_characters_of_context_and_the_next_as_class() {
        let s: Vec<u8> = (0..LENGTH).map(|i| (i % SYMBOLS) as u8).collect();
        let split = windows(&[s.clone(), s.clone()]);
        assert_eq!(split.len(), 2 * PREDICTED);
        assert_eq!(split.width(), 300);
        // Row 3 of string 1 predicts position 13 from positions 4..13.
        let row = split.image(PREDICTED + 3);
        assert_eq!(split.labels[PREDICTED + 3], s[13]);
        assert!(row[..SYMBOLS].iter().all(|&v| v == 0), "label slots are left to the head");
        for k in 0..CONTEXT {
            let slot = &row[SYMBOLS * (k + 1)..SYMBOLS * (k + 2)];
            assert_eq!(slot.iter().position(|&v| v == 255), Some(s[4 + k] as usize));
            assert_eq!(slot.iter().filter(|&&v| v != 0).count(), 1);
        }
    }

    #[test]
    fn symbols_round_trip() {
        let s: Vec<u8> = b"a z,;.".iter().map(|&c| symbol(c).unwrap()).collect();
        assert_eq!(s, [0, 26, 25, 27, 28, 29]);
        assert_eq!(text(&s), "a z,;.");
        assert_eq!(symbol(b'!'), None);
    }
}
