//! Reading ROS 2 parameters files and `-p name:=value` overrides without ROS, as rcl
//! reads them: for the commands that run without a ROS node (the bag replay, inspect).

use super::value::{ParamValue, Params};

/// The parameters a ROS parameters file gives the node `node_name`: the entries under
/// `/**`, `**`, `node_name` and `/node_name` (in that order, later ones winning), as rcl
/// reads them. For the commands that run without ROS (the bag replay).
pub fn params_from_yaml(text: &str, node_name: &str) -> std::result::Result<Params, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = Params::new();
    for key in ["/**".to_owned(), "**".to_owned(), node_name.to_owned(), format!("/{node_name}")] {
        let Some(params) = doc.get(key.as_str()).and_then(|n| n.get("ros__parameters")) else { continue };
        let map = params.as_mapping().ok_or_else(|| format!("{key}.ros__parameters is not a mapping"))?;
        for (k, v) in map {
            let name = k.as_str().ok_or_else(|| format!("parameter name {k:?} is not a string"))?;
            out.insert(name.to_owned(), yaml_value(v).map_err(|e| format!("parameter `{name}`: {e}"))?);
        }
    }
    Ok(out)
}

/// One `name:=value` override, the value read as YAML (as `-p name:=value` does).
pub fn param_override(arg: &str) -> std::result::Result<(String, ParamValue), String> {
    let (name, value) = arg.split_once(":=").ok_or_else(|| format!("`{arg}`: expected name:=value"))?;
    let v: serde_yaml::Value = serde_yaml::from_str(value).map_err(|e| format!("`{arg}`: {e}"))?;
    Ok((name.to_owned(), yaml_value(&v).map_err(|e| format!("`{arg}`: {e}"))?))
}

fn yaml_value(v: &serde_yaml::Value) -> std::result::Result<ParamValue, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Bool(b) => ParamValue::Bool(*b),
        // Each `expect` below follows the check of the same kind (`is_i64`, `all(...)`).
        Y::Number(n) if n.is_i64() => ParamValue::Integer(n.as_i64().expect("checked")),
        Y::Number(n) => ParamValue::Double(n.as_f64().ok_or("number out of range")?),
        Y::String(s) => ParamValue::String(s.clone()),
        Y::Sequence(items) => {
            let all = |f: fn(&Y) -> bool| items.iter().all(f);
            if items.is_empty() || all(|i| i.is_string()) {
                ParamValue::StringArray(items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect())
            } else if all(|i| i.is_bool()) {
                ParamValue::BoolArray(items.iter().map(|i| i.as_bool().expect("checked")).collect())
            } else if all(|i| i.is_i64()) {
                ParamValue::IntegerArray(items.iter().map(|i| i.as_i64().expect("checked")).collect())
            } else if all(|i| i.is_number()) {
                ParamValue::DoubleArray(items.iter().map(|i| i.as_f64().expect("checked")).collect())
            } else {
                return Err("a list must hold values of one type".into());
            }
        }
        other => return Err(format!("unsupported value {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_node_sections_and_overrides() {
        let text = "/**:\n  ros__parameters:\n    control_rate_hz: 10\n    camera_names: [a, b]\n\
                    vla_controller:\n  ros__parameters:\n    control_rate_hz: 20.0\n\
                    other:\n  ros__parameters:\n    control_rate_hz: 30.0\n";
        let p = params_from_yaml(text, "vla_controller").unwrap();
        assert_eq!(p["control_rate_hz"], ParamValue::Double(20.0));
        assert_eq!(p["camera_names"], ParamValue::StringArray(vec!["a".into(), "b".into()]));
        assert_eq!(param_override("joint_lower_limits:=[0, 1.5]").unwrap().1, ParamValue::DoubleArray(vec![0.0, 1.5]));
        assert_eq!(param_override("device:=cuda").unwrap().1, ParamValue::String("cuda".into()));
        assert!(param_override("device=cuda").is_err());
    }
}
