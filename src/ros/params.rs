//! ROS parameters: declared from the configuration's table with their descriptions, read
//! into [`ParamValue`]s, and served (list, get, set, describe) with run-time changes
//! validated exactly as at start-up.

use std::sync::Mutex;

use r2r::ParameterValue;

use crate::core::config::{Config, ParamValue, Params};

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
pub struct LiveConfig(pub Config);

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
        self.0
            .to_params()
            .remove(name)
            .map(from_param_value)
            .ok_or_else(|| r2r::Error::InvalidParameterName { name: name.to_owned() })
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        // check_parameter converted and applied the very same value without an error.
        self.check_parameter(name, value)?;
        let v = to_param_value(value).expect("checked");
        self.0 = self.0.with_runtime_change(name, &v).expect("checked");
        Ok(())
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        let conv = |msg: String| r2r::Error::ParameterValueConv { name: name.to_owned(), msg };
        let v = to_param_value(value).ok_or_else(|| conv("unsupported value type".into()))?;
        self.0.with_runtime_change(name, &v).map(|_| ()).map_err(|e| conv(e.to_string()))
    }
}

pub fn lock_live(c: &Mutex<LiveConfig>) -> std::sync::MutexGuard<'_, LiveConfig> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

