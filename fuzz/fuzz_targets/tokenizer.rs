//! The tokenizers on any instruction text with any vocabulary: exactly `max_length` ids
//! and mask entries, real tokens first, every id a vocabulary id, `unk_id` or (on
//! padding) `pad_id`, and no character lost without being counted as cut off; and the
//! pipeline either takes the instruction or rejects it with a reason, never both.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vla_controller::core::config::Config;
use vla_controller::core::inputs::tokenizer::{CharTokenizer, TokenizerSpec, Tokens};
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

/// A tokenizer built from the fuzzer's spec: its encoding, and the ids it can give a
/// real token (besides `unk_id`).
struct Built {
    encode: Box<dyn Fn(&str) -> Tokens>,
    known_ids: std::ops::RangeInclusive<i64>,
}

/// Every tokenizer kind of the contract, built from a spec (or refused with a reason);
/// a new kind is one more entry.
const KINDS: &[(&str, fn(&TokenizerSpec) -> Result<Built, String>)] = &[("char", |spec| {
    let t = CharTokenizer::new(spec.clone())?;
    Ok(Built { encode: Box::new(move |s| t.encode(s)), known_ids: 2..=1 + spec.vocab.chars().count() as i64 })
})];

fuzz_target!(|input: Input<'_>| {
    let (kind, build) = KINDS[input.kind as usize % KINDS.len()];
    let spec = TokenizerSpec {
        kind: kind.into(),
        vocab: input.vocab.into(),
        max_length: input.max_length as usize % 600,
        pad_id: input.pad_id.into(),
        unk_id: input.unk_id.into(),
        lowercase: input.lowercase,
    };
    let built = match build(&spec) {
        Ok(b) => b,
        Err(why) => {
            assert!(spec.max_length == 0 && why.contains("max_length"), "{kind} refused {spec:?}: {why}");
            return;
        }
    };
    let t = (built.encode)(input.text);
    let l = spec.max_length;
    assert_eq!((t.ids.len(), t.mask.len()), (l, l), "{kind}: always max_length slots");
    let real = t.mask.iter().take_while(|m| **m).count();
    assert!(t.mask[real..].iter().all(|m| !m), "{kind}: real tokens first");
    assert_eq!(t.pieces.len(), real, "{kind}: one piece per real token");
    assert!(t.ids[real..].iter().all(|id| *id == spec.pad_id), "{kind}: padding is pad_id");
    assert!(t.ids[..real].iter().all(|id| built.known_ids.contains(id) || *id == spec.unk_id), "{kind}: {:?}", t.ids);
    assert!(t.unknown <= real, "{kind}: {} unknown of {real}", t.unknown);
    let unk = t.ids[..real].iter().filter(|id| **id == spec.unk_id).count();
    assert!(t.unknown <= unk, "{kind}: {} counted unknown, {unk} unk ids", t.unknown);
    if kind == "char" {
        assert_eq!(real + t.truncated, input.text.trim().chars().count(), "char: nothing lost uncounted");
    }

    // The pipeline with a policy of this tokenizer: the instruction is used or rejected.
    let cfg = Config::default();
    let meta = vla_controller::core::contract::PolicyMeta { tokenizer: spec, ..FakePolicy::meta_for(&cfg, 4) };
    let mut pipe = Pipeline::new(&cfg, &meta);
    let mut events = Events::new();
    pipe.on_instruction(input.text, &mut events);
    let used = events.iter().filter(|e| matches!(e, Event::Used(_))).count();
    let rejected: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Rejected { .. })).collect();
    assert_eq!(used + rejected.len(), 1, "{events:?}");
    assert_eq!(pipe.instruction().is_some(), used == 1);
});
