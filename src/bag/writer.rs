//! Writing a rosbag2 recording: one MCAP file (profile `ros2`, `ros2msg` schemas, `cdr`
//! messages, zstd chunks) and the metadata.yaml that `ros2 bag info`, rosbag2 readers and
//! the `rosbags` library expect beside it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::msgdef;
use crate::error::{Error, Result};

pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    writer: mcap::Writer<BufWriter<File>>,
    channels: HashMap<String, u16>,
    /// topic -> (type, count)
    topics: BTreeMap<String, (String, u64)>,
    start: Option<i64>,
    end: i64,
    count: u64,
}

#[derive(Serialize)]
struct Nanos {
    nanoseconds: i64,
}

#[derive(Serialize)]
struct Since {
    nanoseconds_since_epoch: i64,
}

#[derive(Serialize)]
struct TopicMetadata {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    serialization_format: String,
    offered_qos_profiles: String,
    type_description_hash: String,
}

#[derive(Serialize)]
struct TopicCount {
    topic_metadata: TopicMetadata,
    message_count: u64,
}

#[derive(Serialize)]
struct FileInfo {
    path: String,
    starting_time: Since,
    duration: Nanos,
    message_count: u64,
}

#[derive(Serialize)]
struct Info {
    version: u32,
    storage_identifier: String,
    duration: Nanos,
    starting_time: Since,
    message_count: u64,
    topics_with_message_count: Vec<TopicCount>,
    compression_format: String,
    compression_mode: String,
    relative_file_paths: Vec<String>,
    files: Vec<FileInfo>,
    custom_data: BTreeMap<String, String>,
    ros_distro: String,
}

#[derive(Serialize)]
struct Metadata {
    rosbag2_bagfile_information: Info,
}

/// QoS that `ros2 bag play` should offer: reliable, volatile, keep last 10.
const QOS: &str = "- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 9223372036\n    nsec: 854775807\n  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n  avoid_ros_namespace_conventions: false";

impl BagWriter {
    /// Creates the bag folder `dir` (which must not exist, as with `ros2 bag record`).
    pub fn create(dir: &Path) -> Result<BagWriter> {
        if dir.exists() {
            return Err(Error::bag(dir, "already exists; choose a new output folder"));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::bag(dir, e))?;
        let stem = dir.file_name().and_then(|n| n.to_str()).unwrap_or("bag").to_owned();
        let file_name = format!("{stem}_0.mcap");
        let path = dir.join(&file_name);
        let file = File::create(&path).map_err(|e| Error::bag(&path, e))?;
        let options = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("vla_controller ", env!("CARGO_PKG_VERSION")))
            .compression(Some(mcap::Compression::Zstd));
        let writer = options.create(BufWriter::new(file)).map_err(|e| Error::bag(&path, e))?;
        Ok(BagWriter {
            dir: dir.to_owned(),
            file_name,
            writer,
            channels: HashMap::new(),
            topics: BTreeMap::new(),
            start: None,
            end: 0,
            count: 0,
        })
    }

    fn channel(&mut self, topic: &str, type_name: &str) -> Result<u16> {
        if let Some(id) = self.channels.get(topic) {
            return Ok(*id);
        }
        let definition = msgdef::definition(type_name)?;
        let path = self.dir.join(&self.file_name);
        let schema = self.writer.add_schema(type_name, "ros2msg", definition.as_bytes()).map_err(|e| Error::bag(&path, e))?;
        let metadata = BTreeMap::from([("offered_qos_profiles".to_owned(), QOS.to_owned())]);
        let id = self.writer.add_channel(schema, topic, "cdr", &metadata).map_err(|e| Error::bag(&path, e))?;
        self.channels.insert(topic.to_owned(), id);
        self.topics.insert(topic.to_owned(), (type_name.to_owned(), 0));
        Ok(id)
    }

    /// Writes CDR bytes of ROS type `type_name` (`pkg/msg/Type`) on `topic` at `time`.
    pub fn write_raw(&mut self, topic: &str, type_name: &str, time: i64, data: &[u8]) -> Result<()> {
        let channel_id = self.channel(topic, type_name)?;
        let header = mcap::records::MessageHeader {
            channel_id,
            sequence: self.count as u32,
            log_time: time.max(0) as u64,
            publish_time: time.max(0) as u64,
        };
        let path = self.dir.join(&self.file_name);
        self.writer.write_to_known_channel(&header, data).map_err(|e| Error::bag(&path, e))?;
        // `self.channel` above registered the topic (or found it registered).
        self.topics.get_mut(topic).expect("channel made above").1 += 1;
        self.start = Some(self.start.map_or(time, |s| s.min(time)));
        self.end = self.end.max(time);
        self.count += 1;
        Ok(())
    }

    /// The bag folder being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn message_count(&self) -> u64 {
        self.count
    }

    /// Completes the MCAP file and writes metadata.yaml.
    pub fn finish(mut self) -> Result<PathBuf> {
        let path = self.dir.join(&self.file_name);
        self.writer.finish().map_err(|e| Error::bag(&path, e))?;
        let start = self.start.unwrap_or(0);
        let duration = self.end - start;
        let info = Info {
            version: 9,
            storage_identifier: "mcap".into(),
            duration: Nanos { nanoseconds: duration },
            starting_time: Since { nanoseconds_since_epoch: start },
            message_count: self.count,
            topics_with_message_count: self
                .topics
                .iter()
                .map(|(name, (ty, n))| TopicCount {
                    topic_metadata: TopicMetadata {
                        name: name.clone(),
                        type_name: ty.clone(),
                        serialization_format: "cdr".into(),
                        offered_qos_profiles: QOS.into(),
                        type_description_hash: String::new(),
                    },
                    message_count: *n,
                })
                .collect(),
            compression_format: String::new(),
            compression_mode: String::new(),
            relative_file_paths: vec![self.file_name.clone()],
            files: vec![FileInfo {
                path: self.file_name.clone(),
                starting_time: Since { nanoseconds_since_epoch: start },
                duration: Nanos { nanoseconds: duration },
                message_count: self.count,
            }],
            custom_data: BTreeMap::new(),
            ros_distro: "kilted".into(),
        };
        let meta = self.dir.join("metadata.yaml");
        let text = serde_yaml::to_string(&Metadata { rosbag2_bagfile_information: info }).map_err(|e| Error::bag(&meta, e))?;
        std::fs::write(&meta, text).map_err(|e| Error::bag(&meta, e))?;
        Ok(self.dir)
    }
}
