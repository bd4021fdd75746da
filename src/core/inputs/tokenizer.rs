//! The instruction's tokenizer, as the policy's metadata describes it
//! (docs/POLICY_CONTRACT.md): characters (one token per Unicode scalar value, so Chinese
//! and English need no word segmentation), or a Hugging Face `tokenizer.json` (the
//! subword tokenizers of pi0, SmolVLA and other VLM-based policies), read with the
//! `tokenizers` crate, giving Python's `tokenizers` ids for the same text (the pipeline
//! trims an instruction before it gets here; docs/POLICY_CONTRACT.md).

use std::collections::HashMap;
use std::str::FromStr;

use serde::Deserialize;

/// A tokenizer's description in the policy's metadata.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TokenizerSpec {
    Char(CharSpec),
    Hf(HfSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CharSpec {
    pub vocab: String,
    pub max_length: usize,
    pub pad_id: i64,
    pub unk_id: i64,
    pub lowercase: bool,
}

/// A Hugging Face tokenizer: its `tokenizer.json` is a file beside the policy (`file`,
/// relative to the policy's folder) or the text an exported method of the policy returns
/// (`method`), so that it travels inside the policy file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HfSpec {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    pub max_length: usize,
    pub pad_id: i64,
}

impl TokenizerSpec {
    pub fn max_length(&self) -> usize {
        match self {
            TokenizerSpec::Char(c) => c.max_length,
            TokenizerSpec::Hf(h) => h.max_length,
        }
    }
}

/// An instruction as the policy takes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tokens {
    /// Exactly `max_length` ids, padded (none for a policy without language).
    pub ids: Vec<i64>,
    /// True for real tokens.
    pub mask: Vec<bool>,
    /// The text behind each real token, for display.
    pub pieces: Vec<String>,
    /// Tokens cut off beyond `max_length`.
    pub truncated: usize,
    /// Tokens outside the vocabulary (encoded as the unknown id).
    pub unknown: usize,
}

impl Tokens {
    /// The real tokens.
    pub fn len(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These tokens with real token `i` masked out (its id the padding id): what token
    /// occlusion feeds the policy.
    pub fn without(&self, i: usize, pad_id: i64) -> Tokens {
        let mut t = self.clone();
        if let Some(k) = self.mask.iter().enumerate().filter(|(_, m)| **m).nth(i).map(|(k, _)| k) {
            t.mask[k] = false;
            t.ids[k] = pad_id;
        }
        t
    }
}

/// The tokenizer of a policy.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    Char(CharTokenizer),
    Hf(HfTokenizer),
}

impl Tokenizer {
    /// The tokenizer `spec` describes; `hf_json` is the `tokenizer.json` text a Hugging
    /// Face tokenizer needs (read by the policy loader from the file or the method).
    pub fn new(spec: &TokenizerSpec, hf_json: Option<&str>) -> Result<Tokenizer, String> {
        match spec {
            TokenizerSpec::Char(c) => CharTokenizer::new(c.clone()).map(Tokenizer::Char),
            TokenizerSpec::Hf(h) => {
                let json = hf_json.ok_or("a Hugging Face tokenizer needs its tokenizer.json")?;
                HfTokenizer::new(json, h.max_length, h.pad_id).map(Tokenizer::Hf)
            }
        }
    }

    pub fn max_length(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.spec.max_length,
            Tokenizer::Hf(t) => t.max_length,
        }
    }

    pub fn pad_id(&self) -> i64 {
        match self {
            Tokenizer::Char(t) => t.spec.pad_id,
            Tokenizer::Hf(t) => t.pad_id,
        }
    }

    pub fn encode(&self, text: &str) -> Tokens {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Hf(t) => t.encode(text),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CharTokenizer {
    spec: CharSpec,
    ids: HashMap<char, i64>,
}

impl CharTokenizer {
    pub fn new(spec: CharSpec) -> Result<Self, String> {
        if spec.max_length == 0 {
            return Err("tokenizer max_length is 0".into());
        }
        let ids = spec.vocab.chars().enumerate().map(|(i, c)| (c, 2 + i as i64)).collect();
        Ok(CharTokenizer { spec, ids })
    }

    /// The instruction stripped of surrounding whitespace, ASCII letters lower-cased,
    /// one token per character.
    pub fn encode(&self, text: &str) -> Tokens {
        let s = &self.spec;
        let mut t = Tokens {
            ids: Vec::with_capacity(s.max_length),
            mask: Vec::with_capacity(s.max_length),
            ..Tokens::default()
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

/// A Hugging Face `tokenizer.json` tokenizer: its normalizer, pre-tokenizer, model and
/// post-processor (special tokens included), truncated to `max_length` by the library's
/// own truncation (as Python's `enable_truncation(max_length)`), padded with `pad_id`.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: i64,
    unk_id: Option<u32>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HfTokenizer(max_length {}, pad_id {})", self.max_length, self.pad_id)
    }
}

impl HfTokenizer {
    pub fn new(json: &str, max_length: usize, pad_id: i64) -> Result<Self, String> {
        if max_length == 0 {
            return Err("tokenizer max_length is 0".into());
        }
        let mut inner = tokenizers::Tokenizer::from_str(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let truncation = tokenizers::TruncationParams { max_length, ..Default::default() };
        inner.with_truncation(Some(truncation)).map_err(|e| format!("tokenizer.json: {e}"))?;
        inner.with_padding(None);
        let unk_id = ["[UNK]", "<unk>"].iter().find_map(|t| inner.token_to_id(t));
        Ok(HfTokenizer { inner, max_length, pad_id, unk_id })
    }

    pub fn encode(&self, text: &str) -> Tokens {
        let mut t = Tokens::default();
        match self.inner.encode(text, true) {
            Ok(e) => {
                t.ids = e.get_ids().iter().map(|&i| i64::from(i)).collect();
                t.truncated = e.get_overflowing().iter().map(|o| o.get_ids().len()).sum();
                t.unknown = self.unk_id.map_or(0, |unk| e.get_ids().iter().filter(|&&i| i == unk).count());
                // The text behind each token, for the heatmap (byte-level pieces such as
                // `Ġred` say less than the word itself); special tokens show as themselves.
                t.pieces = e
                    .get_offsets()
                    .iter()
                    .zip(e.get_tokens())
                    .map(|(&(a, b), tok)| text.get(a..b).filter(|s| !s.is_empty()).unwrap_or(tok).to_owned())
                    .collect();
            }
            // The library fails only on inputs its normalizer cannot handle; such an
            // instruction has no tokens (and is rejected as empty).
            Err(e) => tracing::warn!(error = %e, "the tokenizer refused the instruction"),
        }
        t.mask = vec![true; t.ids.len()];
        t.ids.resize(self.max_length, self.pad_id);
        t.mask.resize(self.max_length, false);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(max_length: usize) -> CharTokenizer {
        CharTokenizer::new(CharSpec { vocab: "abc 红色".into(), max_length, pad_id: 0, unk_id: 1, lowercase: true }).unwrap()
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
        let spec: Result<TokenizerSpec, _> = serde_json::from_str(r#"{"type": "bpe", "max_length": 4}"#);
        assert!(spec.unwrap_err().to_string().contains("bpe"));
    }

    #[test]
    fn masking_one_token_keeps_the_others() {
        let t = tok(6).encode("abc");
        let m = t.without(1, 0);
        assert_eq!(m.ids, vec![2, 0, 4, 0, 0, 0]);
        assert_eq!(m.mask, vec![true, false, true, false, false, false]);
        assert_eq!(m.len(), 2);
    }

    /// A word-level tokenizer.json written by hand: the crate reads it, adds the
    /// post-processor's special tokens, truncates and pads.
    #[test]
    fn a_tokenizer_json_is_read_truncated_and_padded() {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [{"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                           {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                           {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
          "normalizer": {"type": "Lowercase"},
          "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}},
          "decoder": null,
          "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "pick": 3, "red": 4, "红色": 5}, "unk_token": "[UNK]"}
        }"#;
        let t = HfTokenizer::new(json, 6, 0).unwrap();
        let e = t.encode("Pick red 红色 ball");
        assert_eq!(e.ids, vec![2, 3, 4, 5, 1, 0]);
        assert_eq!(e.pieces, vec!["[CLS]", "Pick", "red", "红色", "ball"]);
        assert_eq!((e.unknown, e.truncated), (1, 0));
        let e = t.encode("pick red pick red pick red");
        assert_eq!(e.ids.len(), 6);
        assert!(e.truncated > 0 && e.mask.iter().all(|m| *m));
        assert!(HfTokenizer::new("{not json", 4, 0).unwrap_err().contains("tokenizer.json"));
    }
}
