//! Message definitions for the schemas of a rosbag2 MCAP file: the `.msg` text of a type
//! and of every type it uses, concatenated as rosbag2 does, read from the interface
//! packages on `AMENT_PREFIX_PATH` (the same place ROS 2 tools read them from).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::{Error, Result};

const SEPARATOR: &str = "================================================================================";

const PRIMITIVES: &[&str] = &[
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "uint64", "string", "wstring", "duration", "time",
];

fn msg_file(package: &str, name: &str) -> Result<PathBuf> {
    let paths = std::env::var("AMENT_PREFIX_PATH").unwrap_or_default();
    paths
        .split(':')
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(p).join("share").join(package).join("msg").join(format!("{name}.msg")))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Bag {
            path: PathBuf::from(format!("{package}/msg/{name}.msg")),
            reason: "message definition not found on AMENT_PREFIX_PATH".into(),
        })
}

/// `pkg/msg/Type` or `pkg/Type` to (`pkg`, `Type`).
fn split(type_name: &str) -> Option<(&str, &str)> {
    let mut parts = type_name.split('/');
    let pkg = parts.next()?;
    let name = parts.next_back()?;
    (!pkg.is_empty() && !name.is_empty() && pkg != name).then_some((pkg, name))
}

/// The types a definition uses, as `pkg/Type`.
fn dependencies(package: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let (Some(ty), Some(rest)) = (words.next(), words.next()) else { continue };
        if rest.contains('=') || line.contains(&format!("{ty} {rest}=")) {
            continue; // a constant
        }
        let base = ty.split('[').next().unwrap_or(ty).split("<=").next().unwrap_or(ty);
        if PRIMITIVES.contains(&base) {
            continue;
        }
        out.push(match base {
            "Header" => "std_msgs/Header".to_owned(),
            b if b.contains('/') => b.to_owned(),
            b => format!("{package}/{b}"),
        });
    }
    out
}

/// The `ros2msg` schema text of `type_name` (`pkg/msg/Type`).
pub fn definition(type_name: &str) -> Result<String> {
    let (pkg, name) = split(type_name).ok_or_else(|| Error::Bag {
        path: PathBuf::from(type_name),
        reason: "not a message type name (pkg/msg/Type)".into(),
    })?;
    let read = |pkg: &str, name: &str| -> Result<String> {
        let path = msg_file(pkg, name)?;
        std::fs::read_to_string(&path).map_err(|e| Error::Bag { path, reason: e.to_string() })
    };
    let root = read(pkg, name)?;
    let mut out = root.trim_end().to_owned();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = dependencies(pkg, &root);
    todo.reverse();
    while let Some(dep) = todo.pop() {
        if !seen.insert(dep.clone()) {
            continue;
        }
        // `dependencies` returns only names that `split` parsed.
        let (dp, dn) = split(&dep).expect("dependencies are pkg/Type");
        let text = read(dp, dn)?;
        out.push_str(&format!("\n{SEPARATOR}\nMSG: {dep}\n{}", text.trim_end()));
        let mut next = dependencies(dp, &text);
        next.reverse();
        todo.extend(next);
    }
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_skip_primitives_constants_and_resolve_header() {
        let text = "# comment\nHeader header\nuint8 OK=0\nstring<=10 name\nfloat64[] data\nMultiArrayLayout layout\ngeometry_msgs/Point[3] points\n";
        assert_eq!(
            dependencies("std_msgs", text),
            vec!["std_msgs/Header", "std_msgs/MultiArrayLayout", "geometry_msgs/Point"]
        );
    }

    #[test]
    #[cfg_attr(not(feature = "ros"), ignore = "reads message definitions from a ROS prefix")]
    fn image_definition_holds_its_dependencies_once() {
        // Reads AMENT_PREFIX_PATH, which scripts/env.sh sets for the build and the tests.
        let d = definition("sensor_msgs/msg/Image").unwrap();
        assert!(d.contains("uint32 height") && d.contains("uint8[] data"));
        assert_eq!(d.matches("MSG: std_msgs/Header").count(), 1);
        assert_eq!(d.matches("MSG: builtin_interfaces/Time").count(), 1);
        let d = definition("vla_controller_msgs/msg/ActivationGrid").unwrap();
        assert!(d.contains("float32[] feature_norms") && d.contains("MSG: std_msgs/Header"));
    }
}
