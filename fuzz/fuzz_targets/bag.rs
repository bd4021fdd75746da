//! The bag reader on mutated rosbag2 storage: MCAP files, sqlite3 files and
//! metadata.yaml, seeded from small valid recordings written by the project's generator
//! (fuzz/make_seeds.py). Whatever the bytes, the reader yields messages and then at most
//! one error, which names the file and the problem (for unreadable data: that it is
//! damaged), and nothing after it; memory stays bounded (libFuzzer's limit) and progress
//! stays a fraction.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vla_controller::bag::BagReader;

/// A bag folder's metadata file starts so; a sqlite3 file starts with its magic; anything
/// else is written as an MCAP file.
const METADATA: &[u8] = b"rosbag2_bagfile_information";
const SQLITE: &[u8] = b"SQLite format 3\0";
/// The storage file a fuzzed metadata.yaml lists (from the seeds).
const SMALL_MCAP: &[u8] = include_bytes!("../seeds/bag/small.mcap");

/// What the reader says of data it cannot read; every error while reading states one.
const DAMAGED: &[&str] = &["damaged MCAP data", "damaged sqlite3 data", "not a readable sqlite3 file", "not a rosbag2 sqlite3 file"];

/// A folder of this process's own in memory, emptied for each input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_owned() } else { std::env::temp_dir() };
        base.join(format!("vla-fuzz-bag-{}", std::process::id()))
    })
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("the scratch folder is writable");
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("the scratch folder can be made");
    let path = if data.starts_with(METADATA) {
        write(&dir.join("metadata.yaml"), data);
        write(&dir.join("b_0.mcap"), SMALL_MCAP);
        dir.to_owned()
    } else {
        let path = dir.join(if data.starts_with(SQLITE) { "b_0.db3" } else { "b_0.mcap" });
        write(&path, data);
        path
    };
    // "bag `<file>`: <problem>": the bag's own folder or file, or a file its
    // metadata.yaml lists, and what is wrong with it.
    let named = |e: &vla_controller::Error| {
        let text = e.to_string();
        let problem = text.strip_prefix("bag `/").and_then(|rest| rest.split_once("`: ")).map(|(_, p)| p);
        assert!(problem.is_some_and(|p| !p.trim().is_empty()), "the error names the file and the problem: {text}");
        text
    };
    let mut reader = match BagReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            named(&e);
            return;
        }
    };
    for _ in 0..100_000 {
        let p = reader.progress();
        assert!((0.0..=1.0).contains(&p), "progress {p}");
        match reader.next() {
            None => return,
            Some(Ok(_message)) => {}
            Some(Err(e)) => {
                let text = named(&e);
                assert!(DAMAGED.iter().any(|d| text.contains(d)), "a read error says the data is damaged: {text}");
                assert!(reader.next().is_none(), "nothing after an error");
                return;
            }
        }
    }
});
