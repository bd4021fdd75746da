//! The tokenizers (the character one and a word-level `tokenizer.json`) on any
//! instruction text with any vocabulary: exactly `max_length` ids and mask entries,
//! real tokens first, every id a vocabulary id, `unk_id` or (on
//! padding) `pad_id`, and no character lost without being counted as cut off; and the
//! pipeline either takes the instruction or rejects it with a reason, never both.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vla_controller::core::config::Config;
use vla_controller::core::contract::PolicyMeta;
use vla_controller::core::inputs::tokenizer::{CharSpec, HfSpec, Tokenizer, TokenizerSpec};
use vla_controller::core::pipeline::{Event, Events, Pipeline};
use vla_controller::policy::fake::FakePolicy;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    kind: u8,
    vocab: &'a str,
    max_length: u16,
    pad_id: i8,
    unk_id: i8,
    lowercase: bool,
    text: &'a str,
}

/// A tokenizer built from the fuzzer's input: the spec it came from, and the ids it can
/// give a real token (besides the unknown id).
struct Built {
    spec: TokenizerSpec,
    tokenizer: Tokenizer,
    known_ids: std::ops::RangeInclusive<i64>,
    unk_id: Option<i64>,
}

/// A `tokenizer.json` of a word-level vocabulary: the input's words (letters and digits
/// only, so that the JSON needs no escaping), after `[UNK]` (0) and `[PAD]` (1).
fn word_level_json(words: &[&str]) -> String {
    let vocab: Vec<String> = ["[UNK]", "[PAD]"].iter().chain(words).enumerate().map(|(i, w)| format!("\"{w}\": {i}")).collect();
    format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {{"type": "Lowercase"}},
        "pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null, "decoder": null,
        "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "[UNK]"}}}}"#,
        vocab.join(", ")
    )
}

/// Every tokenizer kind of the contract, built from the input (or refused with a
/// reason): the character tokenizer, and a `tokenizer.json` through Hugging Face's
/// library.
fn build(input: &Input<'_>) -> Result<Built, String> {
    let max_length = input.max_length as usize % 600;
    if input.kind % 2 == 0 {
        let spec = CharSpec {
            vocab: input.vocab.into(),
            max_length,
            pad_id: input.pad_id.into(),
            unk_id: input.unk_id.into(),
            lowercase: input.lowercase,
        };
        let known_ids = 2..=1 + spec.vocab.chars().count() as i64;
        let unk_id = Some(spec.unk_id);
        let spec = TokenizerSpec::Char(spec);
        Ok(Built { tokenizer: Tokenizer::new(&spec, None)?, spec, known_ids, unk_id })
    } else {
        let mut words: Vec<&str> = input.vocab.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
        words.sort_unstable();
        words.dedup();
        // The model lowercases the text first: an upper-case entry is never matched.
        words.retain(|w| !w.chars().any(|c| c.is_ascii_uppercase()));
        let json = word_level_json(&words);
        let spec = TokenizerSpec::Hf(HfSpec { file: None, method: Some("tokenizer_json".into()), max_length, pad_id: 1 });
        Ok(Built { tokenizer: Tokenizer::new(&spec, Some(&json))?, spec, known_ids: 0..=1 + words.len() as i64, unk_id: Some(0) })
    }
}

fuzz_target!(|input: Input<'_>| {
    let built = match build(&input) {
        Ok(b) => b,
        Err(why) => {
            assert!(input.max_length as usize % 600 == 0 && why.contains("max_length"), "refused: {why}");
            return;
        }
    };
    let kind = if matches!(built.spec, TokenizerSpec::Char(_)) { "char" } else { "tokenizer.json" };
    let t = built.tokenizer.encode(input.text);
    let l = built.spec.max_length();
    let pad_id = built.tokenizer.pad_id();
    assert_eq!((t.ids.len(), t.mask.len()), (l, l), "{kind}: always max_length slots");
    let real = t.mask.iter().take_while(|m| **m).count();
    assert!(t.mask[real..].iter().all(|m| !m), "{kind}: real tokens first");
    assert_eq!(t.pieces.len(), real, "{kind}: one piece per real token");
    assert!(t.ids[real..].iter().all(|id| *id == pad_id), "{kind}: padding is pad_id");
    assert!(t.ids[..real].iter().all(|id| built.known_ids.contains(id) || Some(*id) == built.unk_id), "{kind}: {:?}", t.ids);
    assert!(t.unknown <= real, "{kind}: {} unknown of {real}", t.unknown);
    let unk = t.ids[..real].iter().filter(|id| Some(**id) == built.unk_id).count();
    assert!(t.unknown <= unk, "{kind}: {} counted unknown, {unk} unk ids", t.unknown);
    if kind == "char" {
        assert_eq!(real + t.truncated, input.text.trim().chars().count(), "char: nothing lost uncounted");
    }

    // The pipeline with a policy of this tokenizer: the instruction is used or rejected.
    let cfg = Config::default();
    let meta = PolicyMeta { tokenizer: Some(built.spec), ..FakePolicy::meta_for(&cfg, 4) };
    let mut pipe = Pipeline::new(&cfg, &meta, Some(built.tokenizer));
    let mut events = Events::new();
    pipe.on_instruction(input.text, &mut events);
    let used = events.iter().filter(|e| matches!(e, Event::Used(_))).count();
    let rejected: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Rejected { .. })).collect();
    assert_eq!(used + rejected.len(), 1, "{events:?}");
    assert_eq!(pipe.instruction().is_some(), used == 1);
});
