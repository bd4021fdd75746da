//! ROS parameters: declared from the configuration's table with their descriptions, read
//! into [`ParamValue`]s, and served (list, get, set, describe) with run-time changes
//! validated exactly as at start-up.

use std::sync::Mutex;

use r2r::ParameterValue;

use crate::core::config::{Config, ParamValue, Params};
use crate::core::contract::PolicyMeta;

/// Every parameter the node was started with (parameters files, `-p`), as plain values.
pub fn read(node: &r2r::Node) -> Params {
    lock(&node.params).iter().filter_map(|(k, p)| to_param_value(&p.value).map(|v| (k.clone(), v))).collect()
}

/// Declares every parameter with the value in effect and its description, so that
/// `ros2 param get` and `ros2 param describe` show it.
pub fn declare(node: &r2r::Node, cfg: &Config) {
    let mut p = lock(&node.params);
    for (name, value) in cfg.to_params() {
        let mut param = r2r::Parameter::new(from_param_value(value));
        param.description = Config::spec(&name).map_or("", |s| s.description);
        p.insert(name, param);
    }
    // As rclcpp and rclpy nodes have it, given or not (the launch file passes it only
    // when asked).
    p.entry("use_sim_time".into()).or_insert_with(|| r2r::Parameter::new(ParameterValue::Bool(false)));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_param_value(v: &ParameterValue) -> Option<ParamValue> {
    Some(match v {
        ParameterValue::Bool(b) => ParamValue::Bool(*b),
        ParameterValue::Integer(i) => ParamValue::Integer(*i),
        ParameterValue::Double(d) => ParamValue::Double(*d),
        ParameterValue::String(s) => ParamValue::String(s.clone()),
        ParameterValue::BoolArray(v) => ParamValue::BoolArray(v.clone()),
        ParameterValue::IntegerArray(v) => ParamValue::IntegerArray(v.clone()),
        ParameterValue::DoubleArray(v) => ParamValue::DoubleArray(v.clone()),
        ParameterValue::StringArray(v) => ParamValue::StringArray(v.clone()),
        ParameterValue::NotSet | ParameterValue::ByteArray(_) => return None,
    })
}

fn from_param_value(v: ParamValue) -> ParameterValue {
    match v {
        ParamValue::Bool(b) => ParameterValue::Bool(b),
        ParamValue::Integer(i) => ParameterValue::Integer(i),
        ParamValue::Double(d) => ParameterValue::Double(d),
        ParamValue::String(s) => ParameterValue::String(s),
        ParamValue::BoolArray(v) => ParameterValue::BoolArray(v),
        ParamValue::IntegerArray(v) => ParameterValue::IntegerArray(v),
        ParamValue::DoubleArray(v) => ParameterValue::DoubleArray(v),
        ParamValue::StringArray(v) => ParameterValue::StringArray(v),
    }
}

/// The configuration as the parameter services see it: reads return what is in effect,
/// writes are validated like start-up values and accepted only for parameters that take
/// effect while running (the others are refused with the reason).
pub struct LiveConfig {
    pub cfg: Config,
    /// The policy's description: a change is refused when the policy cannot follow it
    /// (policy_attention of a policy without patch maps or token weights).
    meta: PolicyMeta,
}

impl LiveConfig {
    pub fn new(cfg: Config, meta: PolicyMeta) -> Self {
        LiveConfig { cfg, meta }
    }

    /// The configuration after changing `name` to `value`, or why not.
    fn changed(&self, name: &str, value: &ParameterValue) -> Result<Config, String> {
        let v = to_param_value(value).ok_or("unsupported value type")?;
        let cfg = self.cfg.with_runtime_change(name, &v).map_err(|e| e.to_string())?;
        self.meta.explainable(cfg.explanation_method, cfg.token_weight_method)?;
        Ok(cfg)
    }
}

impl r2r::RosParams for LiveConfig {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<r2r::Parameter>,
        _params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        Ok(()) // declared by `setup`, with descriptions
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        self.cfg
            .to_params()
            .remove(name)
            .map(from_param_value)
            .ok_or_else(|| r2r::Error::InvalidParameterName { name: name.to_owned() })
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.cfg = self.changed(name, value).map_err(|msg| r2r::Error::ParameterValueConv { name: name.to_owned(), msg })?;
        Ok(())
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.changed(name, value).map(|_| ()).map_err(|msg| r2r::Error::ParameterValueConv { name: name.to_owned(), msg })
    }
}

pub fn lock_live(c: &Mutex<LiveConfig>) -> std::sync::MutexGuard<'_, LiveConfig> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

