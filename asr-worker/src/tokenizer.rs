//! Moonshine's token table: turns the decoder's token ids back into text.
//!
//! `tokenizer.bin` is a flat list: for each id in order, one length byte and then that many
//! bytes. Ids 3 to 258 are the 256 single raw bytes (SentencePiece byte fallback), so joining
//! the entries' bytes and decoding UTF-8 reassembles characters split across tokens.

use std::path::Path;

use swictation_worker_kit::ModelError;

/// The id the decoder is started with.
pub const START: i64 = 1;
/// The id the decoder emits when the text is complete.
pub const END: i64 = 2;

/// Ids below this are `<unk>`, `<s>` and `</s>`, never text.
const FIRST_TEXT_ID: usize = 3;
/// The byte-fallback block: id `FIRST_TEXT_ID + b` is the single byte `b`.
const BYTE_IDS: usize = 256;
/// SentencePiece's word-boundary marker (U+2581), which stands for a space.
const WORD_BOUNDARY: char = '\u{2581}';

/// Maps Moonshine token ids to their bytes.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Each id's bytes; empty for ids that never produce text (specials).
    pieces: Vec<Box<[u8]>>,
}

impl Tokenizer {
    /// Read `tokenizer.bin` from `path`; a missing or malformed file is an error naming it.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing(path.to_path_buf()));
        }
        let load = |reason: String| ModelError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| load(e.to_string()))?;
        Self::from_bytes(&bytes)
            .map_err(|reason| load(format!("not a Moonshine tokenizer.bin: {reason}")))
    }

    /// Parse the contents of a `tokenizer.bin`, checking its structure so that a truncated or
    /// foreign file is refused instead of producing garbage text.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = bytes;
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            let Some((piece, tail)) = tail.split_at_checked(len) else {
                return Err(format!(
                    "entry for id {} needs {len} bytes but only {} remain (file truncated?)",
                    pieces.len(),
                    tail.len()
                ));
            };
            pieces.push(Box::<[u8]>::from(piece));
            rest = tail;
        }
        let needed = FIRST_TEXT_ID + BYTE_IDS;
        if pieces.len() < needed {
            return Err(format!(
                "{} entries, expected at least {needed}",
                pieces.len()
            ));
        }
        // The byte block is fixed by the format, so it doubles as a cheap integrity check.
        for (offset, piece) in pieces[FIRST_TEXT_ID..needed].iter().enumerate() {
            if **piece != [offset as u8] {
                return Err(format!(
                    "id {} should be the single byte {offset:#04x}",
                    FIRST_TEXT_ID + offset
                ));
            }
        }
        for (id, piece) in pieces.iter_mut().enumerate() {
            if id < FIRST_TEXT_ID || is_added_special(piece) {
                *piece = Box::default();
            }
        }
        Ok(Self { pieces })
    }

    /// How many ids the table covers.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the table is empty (never true for a table that loaded).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Turn token ids into trimmed text; special and out-of-range ids contribute nothing.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(piece) = usize::try_from(id).ok().and_then(|i| self.pieces.get(i)) {
                bytes.extend_from_slice(piece);
            }
        }
        String::from_utf8_lossy(&bytes)
            .replace(WORD_BOUNDARY, " ")
            .trim()
            .to_string()
    }
}

/// The tiny model's table ends in reserved special tokens `<<ST_0>>` .. `<<ST_767>>`; like the
/// reference tokenizer (skip special tokens), they must not leak into the text.
fn is_added_special(piece: &[u8]) -> bool {
    piece
        .strip_prefix(b"<<ST_")
        .and_then(|p| p.strip_suffix(b">>"))
        .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(extra: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for special in [&b"<unk>"[..], b"<s>", b"</s>"] {
            out.push(special.len() as u8);
            out.extend_from_slice(special);
        }
        for b in 0..=255u8 {
            out.extend_from_slice(&[1, b]);
        }
        for piece in extra {
            out.push(piece.len() as u8);
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn decodes_pieces_bytes_and_word_boundaries() {
        let t = Tokenizer::from_bytes(&table(&[
            "\u{2581}go".as_bytes(),
            "\u{2581}for".as_bytes(),
            b"ward",
            b"<<ST_3>>",
        ]))
        .expect("valid table");
        assert_eq!(t.len(), 263);
        assert_eq!(t.decode(&[START, 259, 260, 261, END]), "go forward");
        // "é" split across two byte-fallback ids reassembles.
        assert_eq!(t.decode(&[259, 3 + 0xc3, 3 + 0xa9]), "goé");
        // Specials, added specials and ids outside the table are dropped, not a panic.
        assert_eq!(t.decode(&[0, 262, -5, 99_999, 259]), "go");
        assert_eq!(t.decode(&[]), "");
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(Tokenizer::from_bytes(b"").is_err());
        assert!(Tokenizer::from_bytes(b"\x05ab").is_err());
        let mut truncated = table(&[b"word"]);
        truncated.pop();
        assert!(Tokenizer::from_bytes(&truncated).is_err());
        let mut shifted = table(&[]);
        shifted[20] ^= 0xff;
        assert!(Tokenizer::from_bytes(&shifted).is_err());
    }
}
