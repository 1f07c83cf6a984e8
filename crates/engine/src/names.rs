//! Instance ids and names.

use super::{EngineError, Result};

/// A new random 64-hex-digit id.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    if getrandom(&mut buf).is_err() {
        // The kernel's RNG is always there on Linux; fall back to time and pid anyway.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        return vessel_image::Digest::of(seed.as_bytes()).hex().to_string();
    }
    hex(&buf)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const ADJECTIVES: &[&str] = &[
    "brave",
    "calm",
    "eager",
    "fervent",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "quirky",
    "serene",
    "stoic",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
    "bold",
    "clever",
    "dreamy",
    "focused",
    "gracious",
    "hopeful",
    "kind",
    "loving",
    "modest",
    "nostalgic",
    "pensive",
    "relaxed",
    "sharp",
];
const NOUNS: &[&str] = &[
    "turing",
    "hopper",
    "lovelace",
    "ritchie",
    "thompson",
    "torvalds",
    "knuth",
    "dijkstra",
    "hamilton",
    "liskov",
    "lamport",
    "kernighan",
    "perlman",
    "cerf",
    "wozniak",
    "babbage",
    "shannon",
    "noether",
    "curie",
    "tesla",
    "bell",
    "pike",
    "backus",
    "mccarthy",
    "goldwasser",
    "allen",
    "engelbart",
    "hoare",
    "wirth",
    "stallman",
    "sammet",
    "wing",
];

/// A Docker-style `adjective_name`.
pub fn generate() -> String {
    let mut b = [0u8; 2];
    let _ = getrandom(&mut b);
    format!(
        "{}_{}",
        ADJECTIVES[b[0] as usize % ADJECTIVES.len()],
        NOUNS[b[1] as usize % NOUNS.len()]
    )
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidFlag(format!(
            "invalid name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_id());
        assert!(validate(&generate()).is_ok());
        assert!(validate("web-1.x").is_ok());
        assert!(validate("-x").is_err());
        assert!(validate("a b").is_err());
        assert!(validate("").is_err());
    }
}
