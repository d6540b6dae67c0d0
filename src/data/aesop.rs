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

use super::{read_verified, DataError};

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
    fn symbols_round_trip() {
        let s: Vec<u8> = b"a z,;.".iter().map(|&c| symbol(c).unwrap()).collect();
        assert_eq!(s, [0, 26, 25, 27, 28, 29]);
        assert_eq!(text(&s), "a z,;.");
        assert_eq!(symbol(b'!'), None);
    }
}
