//! One publisher per output topic, each created with its QoS; a thread holds a clone
//! and publishes any [`Message`] on its [`OutputTopic`].

use std::collections::HashMap;

use r2r::{
    diagnostic_msgs::msg::DiagnosticArray,
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::{Float64MultiArray, Header},
    trajectory_msgs::msg::JointTrajectory,
    vla_controller_msgs::msg::{ActivationGrid, InferenceTiming, TokenAttention},
    Publisher, QosProfile,
};

use super::msgs::Message;
use crate::core::config::{CommandType, Config};
use crate::core::topics::OutputTopic;

#[derive(Clone)]
enum AnyPublisher {
    Array(Publisher<Float64MultiArray>),
    Trajectory(Publisher<JointTrajectory>),
    JointState(Publisher<JointState>),
    Image(Publisher<Image>),
    Header(Publisher<Header>),
    Tokens(Publisher<TokenAttention>),
    Grid(Publisher<ActivationGrid>),
    Diagnostics(Publisher<DiagnosticArray>),
    Timing(Publisher<InferenceTiming>),
}

#[derive(Clone)]
pub struct Publishers {
    by_topic: HashMap<OutputTopic, AnyPublisher>,
}

impl Publishers {
    /// Every output topic of `cfg`'s node.
    pub fn new(node: &mut r2r::Node, cfg: &Config) -> r2r::Result<Self> {
        let names = &cfg.camera_names;
        let name = |t: OutputTopic| t.name(names);
        let commands = QosProfile::default().keep_last(10);
        // Explanation images are large and only the newest matters to a viewer.
        let explanations = QosProfile::default().keep_last(2);
        // Timing messages are read by benchmarks, which must see every one.
        let timing = QosProfile::default().keep_last(100);
        let mut by_topic = HashMap::new();
        let command = match cfg.command_type {
            CommandType::Float64MultiArray => AnyPublisher::Array(node.create_publisher(&name(OutputTopic::Commands), commands.clone())?),
            CommandType::JointTrajectory => AnyPublisher::Trajectory(node.create_publisher(&name(OutputTopic::Commands), commands.clone())?),
        };
        by_topic.insert(OutputTopic::Commands, command);
        if !cfg.gripper_joints.is_empty() {
            let p = AnyPublisher::Array(node.create_publisher(&name(OutputTopic::Gripper), commands.clone())?);
            by_topic.insert(OutputTopic::Gripper, p);
        }
        let p = AnyPublisher::JointState(node.create_publisher(&name(OutputTopic::Predicted), commands)?);
        by_topic.insert(OutputTopic::Predicted, p);
        let p = AnyPublisher::Image(node.create_publisher(&name(OutputTopic::Language), explanations.clone())?);
        by_topic.insert(OutputTopic::Language, p);
        for k in 0..names.len() {
            let p = AnyPublisher::Image(node.create_publisher(&name(OutputTopic::Overlay(k)), explanations.clone())?);
            by_topic.insert(OutputTopic::Overlay(k), p);
        }
        let p = AnyPublisher::Tokens(node.create_publisher(&name(OutputTopic::Tokens), explanations.clone())?);
        by_topic.insert(OutputTopic::Tokens, p);
        let p = AnyPublisher::Grid(node.create_publisher(&name(OutputTopic::Grids), explanations)?);
        by_topic.insert(OutputTopic::Grids, p);
        let p = AnyPublisher::Diagnostics(node.create_publisher(&name(OutputTopic::Diagnostics), QosProfile::default())?);
        by_topic.insert(OutputTopic::Diagnostics, p);
        let p = AnyPublisher::Timing(node.create_publisher(&name(OutputTopic::TimingChunk), timing.clone())?);
        by_topic.insert(OutputTopic::TimingChunk, p);
        let p = AnyPublisher::Header(node.create_publisher(&name(OutputTopic::TimingCommand), timing.clone())?);
        by_topic.insert(OutputTopic::TimingCommand, p);
        let p = AnyPublisher::Trajectory(node.create_publisher(&name(OutputTopic::Chunk), timing)?);
        by_topic.insert(OutputTopic::Chunk, p);
        Ok(Publishers { by_topic })
    }

    /// Publishes `msg` on `topic`; failures are logged (a publisher can fail only while
    /// the node shuts down, or for a message of the wrong type, which is a bug).
    pub fn publish(&self, topic: OutputTopic, msg: &Message) {
        let result = match (self.by_topic.get(&topic), msg) {
            (Some(AnyPublisher::Array(p)), Message::Array(m)) => p.publish(m),
            (Some(AnyPublisher::Trajectory(p)), Message::Trajectory(m)) => p.publish(m),
            (Some(AnyPublisher::JointState(p)), Message::JointState(m)) => p.publish(m),
            (Some(AnyPublisher::Image(p)), Message::Image(m)) => p.publish(m),
            (Some(AnyPublisher::Header(p)), Message::Header(m)) => p.publish(m),
            (Some(AnyPublisher::Tokens(p)), Message::Tokens(m)) => p.publish(m),
            (Some(AnyPublisher::Grid(p)), Message::Grid(m)) => p.publish(m),
            (Some(AnyPublisher::Diagnostics(p)), Message::Diagnostics(m)) => p.publish(m),
            (Some(AnyPublisher::Timing(p)), Message::Timing(m)) => p.publish(m),
            _ => {
                tracing::error!(?topic, message = msg.type_name(), "no publisher of this type for the topic");
                return;
            }
        };
        if let Err(error) = result {
            tracing::warn!(?topic, %error, "publishing failed");
        }
    }
}
