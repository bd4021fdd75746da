//! Reading rosbag2 recordings: MCAP (streamed, memory bounded by the largest chunk) and
//! sqlite3 (paged by key), from a bag folder (with or without metadata.yaml) or a single
//! storage file. Messages come in storage order; an error ends the stream after the
//! messages read before it, so what precedes damage is still used.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct BagMessage {
    pub topic: String,
    /// `pkg/msg/Type`.
    pub type_name: String,
    /// `cdr` for ROS 2.
    pub encoding: String,
    /// Receive time in nanoseconds (rosbag2's timestamp, MCAP's log_time).
    pub log_time: i64,
    pub data: Vec<u8>,
}

/// Counts bytes read, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Source {
    // Boxed: the reader is ten times the size of the other variant.
    Mcap(Box<mcap::io::MessageReader<BufReader<Counting<File>>>>),
    Sqlite { conn: rusqlite::Connection, after: Option<(i64, i64)>, page: std::vec::IntoIter<(i64, i64, BagMessage)>, total: u64, done: u64 },
}

pub struct BagReader {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(PathBuf, Source)>,
    failed: bool,
    bytes_total: u64,
    bytes_read: Arc<AtomicU64>,
}

/// Storage files of a bag, in recording order.
fn storage_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    if !path.is_dir() {
        return Err(Error::bag(path, "no such file or folder"));
    }
    let meta = path.join("metadata.yaml");
    if meta.is_file() {
        let text = std::fs::read_to_string(&meta).map_err(|e| Error::bag(&meta, e))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::bag(&meta, format!("not valid YAML: {e}")))?;
        let info = &doc["rosbag2_bagfile_information"];
        if let Some(format) = info["compression_format"].as_str().filter(|f| !f.is_empty()) {
            // rosbag2's own compression wraps whole files or messages; MCAP's chunk
            // compression (what rosbag2 uses by default with MCAP) is read as usual.
            let mode = info["compression_mode"].as_str().unwrap_or("");
            return Err(Error::bag(
                &meta,
                format!("rosbag2 {format} compression ({mode} mode) is not supported; `ros2 bag convert` makes an uncompressed copy"),
            ));
        }
        let files = info["relative_file_paths"]
            .as_sequence()
            .ok_or_else(|| Error::bag(&meta, "no rosbag2_bagfile_information.relative_file_paths"))?;
        let files: Vec<PathBuf> = files.iter().filter_map(|f| f.as_str()).map(|f| path.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::bag(missing, "listed in metadata.yaml but missing"));
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::bag(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("mcap" | "db3")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bag(path, "no metadata.yaml and no .mcap or .db3 file"));
    }
    Ok(files)
}

const PAGE: i64 = 256;

fn sqlite_page(conn: &rusqlite::Connection, after: Option<(i64, i64)>) -> rusqlite::Result<Vec<(i64, i64, BagMessage)>> {
    let (t, id) = after.unwrap_or((i64::MIN, i64::MIN));
    let mut stmt = conn.prepare_cached(
        "SELECT m.timestamp, m.id, t.name, t.type, t.serialization_format, m.data \
         FROM messages m JOIN topics t ON m.topic_id = t.id \
         WHERE m.timestamp > ?1 OR (m.timestamp = ?1 AND m.id > ?2) \
         ORDER BY m.timestamp, m.id LIMIT ?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![t, id, PAGE], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            BagMessage { log_time: r.get(0)?, topic: r.get(2)?, type_name: r.get(3)?, encoding: r.get(4)?, data: r.get(5)? },
        ))
    })?;
    rows.collect()
}

impl BagReader {
    /// Opens a bag folder or storage file; nothing is read before the first `next`.
    pub fn open(path: &Path) -> Result<BagReader> {
        let files = storage_files(path)?;
        let bytes_total = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
        Ok(BagReader { files, next_file: 0, current: None, failed: false, bytes_total, bytes_read: Arc::new(AtomicU64::new(0)) })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Fraction read so far, by bytes for MCAP and by rows for sqlite3.
    pub fn progress(&self) -> f64 {
        if let Some((_, Source::Sqlite { total, done, .. })) = &self.current {
            let before = self.next_file.saturating_sub(1) as f64;
            return (before + *done as f64 / (*total).max(1) as f64) / self.files.len() as f64;
        }
        self.bytes_read.load(Ordering::Relaxed) as f64 / self.bytes_total.max(1) as f64
    }

    fn open_file(&self, path: &Path) -> Result<Source> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("db3") => {
                let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| Error::bag(path, format!("not a readable sqlite3 file: {e}")))?;
                let total: i64 = conn
                    .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
                    .map_err(|e| Error::bag(path, format!("not a rosbag2 sqlite3 file: {e}")))?;
                Ok(Source::Sqlite { conn, after: None, page: Vec::new().into_iter(), total: total as u64, done: 0 })
            }
            _ => {
                let file = File::open(path).map_err(|e| Error::bag(path, e))?;
                // No record is longer than its file: a damaged length field is an error,
                // not a buffer of that size (it overflowed or exhausted memory).
                let len = file.metadata().map_err(|e| Error::bag(path, e))?.len();
                let options = mcap::sans_io::LinearReaderOptions::default().with_record_length_limit(usize::try_from(len).unwrap_or(usize::MAX));
                let counting = Counting { inner: file, read: self.bytes_read.clone() };
                let reader = mcap::io::MessageReader::new_with_options(BufReader::with_capacity(1 << 20, counting), options);
                Ok(Source::Mcap(Box::new(reader)))
            }
        }
    }

    fn next_from(path: &Path, source: &mut Source) -> Option<Result<BagMessage>> {
        match source {
            Source::Mcap(reader) => reader.next().map(|m| {
                let m = m.map_err(|e| Error::bag(path, format!("damaged MCAP data: {e}")))?;
                let (type_name, _) = match &m.channel.schema {
                    Some(s) => (s.name.clone(), s.encoding.clone()),
                    None => (String::new(), String::new()),
                };
                Ok(BagMessage {
                    topic: m.channel.topic.clone(),
                    type_name,
                    encoding: m.channel.message_encoding.clone(),
                    log_time: m.log_time as i64,
                    data: m.data.into_owned(),
                })
            }),
            Source::Sqlite { conn, after, page, done, .. } => {
                if let Some((t, id, msg)) = page.next() {
                    *after = Some((t, id));
                    *done += 1;
                    return Some(Ok(msg));
                }
                match sqlite_page(conn, *after) {
                    Err(e) => Some(Err(Error::bag(path, format!("damaged sqlite3 data: {e}")))),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        *page = rows.into_iter();
                        // The arm above took the empty page.
                        let (t, id, msg) = page.next().expect("not empty");
                        *after = Some((t, id));
                        *done += 1;
                        Some(Ok(msg))
                    }
                }
            }
        }
    }
}

impl Iterator for BagReader {
    type Item = Result<BagMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.current.is_none() {
                let path = self.files.get(self.next_file)?.clone();
                self.next_file += 1;
                match self.open_file(&path) {
                    Ok(source) => self.current = Some((path, source)),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            // `current` was either set or just opened above.
            let (path, source) = self.current.as_mut().expect("opened above");
            match Self::next_from(path, source) {
                Some(Ok(m)) => return Some(Ok(m)),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => self.current = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vla-bag-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rosbag2_file_compression_is_refused_by_name() {
        let d = dir("compressed");
        std::fs::write(
            d.join("metadata.yaml"),
            "rosbag2_bagfile_information:\n  compression_format: zstd\n  compression_mode: FILE\n  relative_file_paths: [b_0.mcap.zstd]\n",
        )
        .unwrap();
        let e = BagReader::open(&d).err().unwrap().to_string();
        assert!(e.contains("zstd compression (FILE mode) is not supported"), "{e}");
    }

    #[test]
    fn missing_and_empty_inputs_name_the_problem() {
        let d = dir("empty");
        let e = BagReader::open(&d).err().unwrap().to_string();
        assert!(e.contains("no metadata.yaml and no .mcap or .db3 file"), "{e}");
        std::fs::write(d.join("metadata.yaml"), "rosbag2_bagfile_information:\n  relative_file_paths: [gone.mcap]\n").unwrap();
        let e = BagReader::open(&d).err().unwrap().to_string();
        assert!(e.contains("gone.mcap") && e.contains("listed in metadata.yaml but missing"), "{e}");
        let e = BagReader::open(&d.join("nothing")).err().unwrap().to_string();
        assert!(e.contains("no such file or folder"), "{e}");
    }

    #[test]
    fn a_record_length_beyond_the_file_is_damage_not_an_allocation() {
        // Found by fuzzing (fuzz/fuzz_targets/bag.rs): after the magic, an opcode and a
        // length of 2^64 - 1 made the reader reserve that much and panic.
        let d = dir("huge-record");
        let f = d.join("x.mcap");
        let mut bytes = b"\x89MCAP0\r\n".to_vec();
        bytes.push(0x01);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&f, &bytes).unwrap();
        let mut r = BagReader::open(&f).unwrap();
        let e = r.next().unwrap().unwrap_err().to_string();
        assert!(e.contains("x.mcap") && e.contains("damaged MCAP data"), "{e}");
        assert!(r.next().is_none());
    }

    #[test]
    fn garbage_file_ends_the_stream_with_an_error() {
        let d = dir("garbage");
        let f = d.join("x.mcap");
        std::fs::write(&f, b"this is not an MCAP file at all").unwrap();
        let mut r = BagReader::open(&f).unwrap();
        let e = r.next().unwrap().unwrap_err().to_string();
        assert!(e.contains("x.mcap") && e.contains("damaged MCAP data"), "{e}");
        assert!(r.next().is_none());
    }
}
