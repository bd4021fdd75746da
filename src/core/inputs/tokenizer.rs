//! The character-level tokenizer described by the policy's metadata (docs/POLICY_CONTRACT.md).
//! One token per Unicode scalar value, so Chinese and English need no word segmentation.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenizerSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub vocab: String,
    pub max_length: usize,
    pub pad_id: i64,
    pub unk_id: i64,
    pub lowercase: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Exactly `max_length` ids, padded.
    pub ids: Vec<i64>,
    /// True for real tokens.
    pub mask: Vec<bool>,
    /// The characters behind the real tokens, for display.
    pub pieces: Vec<String>,
    /// Characters cut off beyond `max_length`.
    pub truncated: usize,
    /// Characters not in the vocabulary (encoded as `unk_id`).
    pub unknown: usize,
}

#[derive(Debug, Clone)]
pub struct CharTokenizer {
    spec: TokenizerSpec,
    ids: HashMap<char, i64>,
}

impl CharTokenizer {
    pub fn new(spec: TokenizerSpec) -> Result<Self, String> {
        if spec.kind != "char" {
            return Err(format!("tokenizer type `{}` is not supported (only `char`)", spec.kind));
        }
        if spec.max_length == 0 {
            return Err("tokenizer max_length is 0".into());
        }
        let ids = spec.vocab.chars().enumerate().map(|(i, c)| (c, 2 + i as i64)).collect();
        Ok(CharTokenizer { spec, ids })
    }

    pub fn max_length(&self) -> usize {
        self.spec.max_length
    }

    pub fn encode(&self, text: &str) -> Tokens {
        let s = &self.spec;
        let mut t = Tokens {
            ids: Vec::with_capacity(s.max_length),
            mask: Vec::with_capacity(s.max_length),
            pieces: Vec::new(),
            truncated: 0,
            unknown: 0,
        };
        for c in text.trim().chars() {
            if t.ids.len() == s.max_length {
                t.truncated += 1;
                continue;
            }
            let c = if s.lowercase { c.to_ascii_lowercase() } else { c };
            let id = self.ids.get(&c).copied().unwrap_or_else(|| {
                t.unknown += 1;
                s.unk_id
            });
            t.ids.push(id);
            t.mask.push(true);
            t.pieces.push(c.to_string());
        }
        t.ids.resize(s.max_length, s.pad_id);
        t.mask.resize(s.max_length, false);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(max_length: usize) -> CharTokenizer {
        CharTokenizer::new(TokenizerSpec {
            kind: "char".into(),
            vocab: "abc 红色".into(),
            max_length,
            pad_id: 0,
            unk_id: 1,
            lowercase: true,
        })
        .unwrap()
    }

    #[test]
    fn encodes_chinese_and_english_per_character() {
        let t = tok(8).encode("  Ab 红x ");
        assert_eq!(t.ids, vec![2, 3, 5, 6, 1, 0, 0, 0]);
        assert_eq!(t.mask, vec![true, true, true, true, true, false, false, false]);
        assert_eq!(t.pieces, vec!["a", "b", " ", "红", "x"]);
        assert_eq!((t.truncated, t.unknown), (0, 1));
    }

    #[test]
    fn cuts_at_max_length_and_counts_the_rest() {
        let t = tok(3).encode("abcabc");
        assert_eq!(t.ids, vec![2, 3, 4]);
        assert_eq!(t.truncated, 3);
    }

    #[test]
    fn empty_text_is_all_padding() {
        let t = tok(4).encode(" \t\n");
        assert_eq!(t.ids, vec![0; 4]);
        assert!(t.mask.iter().all(|m| !m));
    }

    #[test]
    fn unknown_kind_is_refused() {
        let mut spec = tok(4).spec;
        spec.kind = "bpe".into();
        assert!(CharTokenizer::new(spec).unwrap_err().contains("bpe"));
    }
}
