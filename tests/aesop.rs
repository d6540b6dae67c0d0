//! Aesop's Fables (E8's data): the 248 strings of 100 characters, built from the verified file.

use std::path::PathBuf;

use ffstream::data::aesop::{text, Aesop, LENGTH, STRINGS};
use sha2::{Digest, Sha256};

fn data_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA (CI: ../shared/data)"))
}

#[test]
fn the_strings_are_248_by_100_over_30_symbols_and_fixed_by_the_file() {
    let aesop = Aesop::load(Some(&data_dir())).unwrap();
    assert_eq!(aesop.strings.len(), STRINGS);
    assert!(aesop.strings.iter().all(|s| s.len() == LENGTH && s.iter().all(|&c| c < 30)));
    let all: String = aesop.strings.iter().map(|s| text(s)).collect();
    // The first fable, cleaned. Both values pin our own recipe (src/data/aesop.rs): if it ever
    // changes, these change with it, and the records made with the old strings must say so.
    assert!(all.starts_with(GOLDEN_START), "{}", &all[..120]);
    let digest: String = Sha256::digest(all.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, GOLDEN_SHA256, "the 24,800 characters changed");
}

const GOLDEN_START: &str =
    "the wolf and the kid there was once a little kid whose growing horns made him think he was a grownup";
/// Also computed by an independent Python implementation of the same recipe.
const GOLDEN_SHA256: &str = "bbe5b8c73639b0d6aea530abea433cc46465a279e1d76051348cbc3677a4103b";
