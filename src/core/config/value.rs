//! Parameter values as ROS 2 knows them, without the ROS types, and the two things the
//! parameter table says about each parameter besides its name: the Rust type it is read
//! into ([`ParamType`]) and the rule its value must keep ([`Rule`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A parameter value as ROS 2 knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    BoolArray(Vec<bool>),
    IntegerArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    StringArray(Vec<String>),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Integer(v) => write!(f, "{v}"),
            ParamValue::Double(v) => write!(f, "{v}"),
            ParamValue::String(v) => write!(f, "{v:?}"),
            ParamValue::BoolArray(v) => write!(f, "{v:?}"),
            ParamValue::IntegerArray(v) => write!(f, "{v:?}"),
            ParamValue::DoubleArray(v) => write!(f, "{v:?}"),
            ParamValue::StringArray(v) => write!(f, "{v:?}"),
        }
    }
}

/// Parameters by name.
pub type Params = BTreeMap<String, ParamValue>;

/// A Rust type a parameter is read into.
pub trait ParamType: Sized {
    /// The ROS type, for `ros2 param describe` and the documentation.
    const ROS_TYPE: &'static str;

    /// The value, or why it is not one (`expected a number`, `expected cpu, cuda or cuda:N`).
    fn from_value(v: &ParamValue) -> Result<Self, String>;

    fn to_value(&self) -> ParamValue;
}

fn expected<T>(what: &str) -> Result<T, String> {
    Err(format!("expected {what}"))
}

impl ParamType for f64 {
    const ROS_TYPE: &'static str = "double";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::Double(v) => Ok(*v),
            // `control_rate_hz: 100` in YAML is an integer; it means 100.0.
            ParamValue::Integer(v) => Ok(*v as f64),
            _ => expected("a number"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::Double(*self)
    }
}

impl ParamType for bool {
    const ROS_TYPE: &'static str = "bool";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::Bool(v) => Ok(*v),
            _ => expected("true or false"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::Bool(*self)
    }
}

impl ParamType for usize {
    const ROS_TYPE: &'static str = "integer";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::Integer(v) => usize::try_from(*v).map_err(|_| "must be an integer >= 0".to_owned()),
            _ => expected("an integer"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::Integer(*self as i64)
    }
}

impl ParamType for u32 {
    const ROS_TYPE: &'static str = "integer";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::Integer(v) => u32::try_from(*v).map_err(|_| format!("must be an integer in 0..={}", u32::MAX)),
            _ => expected("an integer"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::Integer((*self).into())
    }
}

impl ParamType for String {
    const ROS_TYPE: &'static str = "string";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::String(v) => Ok(v.clone()),
            _ => expected("a string"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::String(self.clone())
    }
}

impl ParamType for PathBuf {
    const ROS_TYPE: &'static str = "string";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        String::from_value(v).map(PathBuf::from)
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::String(self.to_string_lossy().into_owned())
    }
}

impl ParamType for Vec<String> {
    const ROS_TYPE: &'static str = "string array";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::StringArray(v) => Ok(v.clone()),
            _ => expected("a list of strings"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::StringArray(self.clone())
    }
}

impl ParamType for Vec<f64> {
    const ROS_TYPE: &'static str = "double array";

    fn from_value(v: &ParamValue) -> Result<Self, String> {
        match v {
            ParamValue::DoubleArray(v) => Ok(v.clone()),
            ParamValue::IntegerArray(v) => Ok(v.iter().map(|x| *x as f64).collect()),
            // An empty YAML list cannot say its element type; rcl reads `[]` as strings.
            ParamValue::StringArray(v) if v.is_empty() => Ok(Vec::new()),
            _ => expected("a list of numbers"),
        }
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::DoubleArray(self.clone())
    }
}

/// A parameter that is one of a few words.
pub trait Choice: Sized + Copy + 'static {
    /// Every value with its word, in the order the documentation lists them.
    const CHOICES: &'static [(&'static str, Self)];
}

/// `a, b or c`.
pub fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Implements [`ParamType`] and `Display` for a [`Choice`]: read from and shown as one of
/// its words.
macro_rules! choice_param {
    ($t:ty) => {
        impl $crate::core::config::value::ParamType for $t {
            const ROS_TYPE: &'static str = "string";

            fn from_value(v: &$crate::core::config::value::ParamValue) -> ::std::result::Result<Self, String> {
                use $crate::core::config::value::Choice;
                let s = String::from_value(v)?;
                <$t>::CHOICES.iter().find(|(w, _)| *w == s).map(|(_, c)| *c).ok_or_else(|| {
                    let words: Vec<&str> = <$t>::CHOICES.iter().map(|(w, _)| *w).collect();
                    format!("expected {}", $crate::core::config::value::or_list(&words))
                })
            }

            fn to_value(&self) -> $crate::core::config::value::ParamValue {
                $crate::core::config::value::ParamValue::String(self.to_string())
            }
        }

        /// The parameter's word.
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                use $crate::core::config::value::Choice;
                f.write_str(<$t>::CHOICES.iter().find(|(_, c)| c == self).map_or("", |(w, _)| *w))
            }
        }
    };
}
pub(crate) use choice_param;

/// What a parameter's value must keep besides its type. Checked at start-up and for
/// every run-time change; the text of a broken rule is the error's reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Any,
    /// A finite number > 0.
    Positive,
    /// A rate in Hz, [`Rule::RATE_HZ`]: periods from 100 microseconds to 1000 seconds, which
    /// every timer and every nanosecond count of a period holds.
    Rate,
    /// A finite number >= 0.
    NonNegative,
    /// A number in [0, 1].
    Unit,
    /// A number in (0, 1].
    OpenUnit,
    /// An integer >= this.
    AtLeast(i64),
    /// 0 or a real-time priority (1-99).
    Priority,
    /// A list of distinct names, at least one.
    Names,
    /// A list of distinct names, possibly none.
    DistinctNames,
    /// A list of finite numbers (its length is checked against other parameters).
    Finite,
    /// A list of `a:b` pairs, each name at most once on its side.
    NamePairs,
}

impl Rule {
    /// The range of [`Rule::Rate`], in Hz.
    pub const RATE_HZ: (f64, f64) = (0.001, 10_000.0);

    /// Whether `v` keeps the rule; values of another type pass (the type check says so).
    pub fn check(self, v: &ParamValue) -> Result<(), String> {
        let number = match v {
            ParamValue::Double(x) => Some(*x),
            ParamValue::Integer(x) => Some(*x as f64),
            _ => None,
        };
        let fail = |why: &str| Err(why.to_owned());
        match (self, number) {
            (Rule::Positive, Some(x)) if !(x.is_finite() && x > 0.0) => fail("must be a finite number > 0"),
            (Rule::Rate, Some(x)) if !(Rule::RATE_HZ.0..=Rule::RATE_HZ.1).contains(&x) => fail("must be a rate of 0.001 to 10000 Hz"),
            (Rule::NonNegative, Some(x)) if !(x.is_finite() && x >= 0.0) => fail("must be a finite number >= 0"),
            (Rule::Unit, Some(x)) if !(0.0..=1.0).contains(&x) => fail("must be in [0, 1]"),
            (Rule::OpenUnit, Some(x)) if !(x > 0.0 && x <= 1.0) => fail("must be in (0, 1]"),
            (Rule::AtLeast(min), _) => match v {
                ParamValue::Integer(x) if *x < min => Err(format!("must be an integer >= {min}")),
                _ => Ok(()),
            },
            (Rule::Priority, _) => match v {
                ParamValue::Integer(x) if !(0..=99).contains(x) => fail("must be 0 (none) or a priority of 1-99"),
                _ => Ok(()),
            },
            (Rule::Names | Rule::DistinctNames, _) => match v {
                ParamValue::StringArray(names) if self == Rule::Names && names.is_empty() => fail("must not be empty"),
                ParamValue::StringArray(names) => match names.iter().enumerate().find(|(i, s)| names[..*i].contains(s)) {
                    Some((_, dup)) => Err(format!("`{dup}` appears twice")),
                    None => Ok(()),
                },
                _ => Ok(()),
            },
            (Rule::NamePairs, _) => match v {
                ParamValue::StringArray(entries) => parse_name_map(entries).map(|_| ()),
                _ => Ok(()),
            },
            (Rule::Finite, _) => match v {
                ParamValue::DoubleArray(x) if x.iter().any(|x| !x.is_finite()) => fail("values must be finite"),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The rule in words, for the documentation (empty for `Any`).
    pub fn describe(self) -> String {
        match self {
            Rule::Any => String::new(),
            Rule::Positive => "> 0".into(),
            Rule::Rate => "0.001 to 10000".into(),
            Rule::NonNegative => ">= 0".into(),
            Rule::Unit => "in [0, 1]".into(),
            Rule::OpenUnit => "in (0, 1]".into(),
            Rule::AtLeast(n) => format!(">= {n}"),
            Rule::Priority => "0 or 1-99".into(),
            Rule::Names => "distinct, at least one".into(),
            Rule::DistinctNames => "distinct".into(),
            Rule::Finite => "finite".into(),
            Rule::NamePairs => "robot:policy pairs".into(),
        }
    }
}

/// The `joint_name_map` entries as (robot name, policy name).
pub fn parse_name_map(entries: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for e in entries {
        let Some((robot, policy)) = e.split_once(':').filter(|(r, p)| !r.is_empty() && !p.is_empty() && !p.contains(':')) else {
            return Err(format!("`{e}`: expected robot_joint:policy_joint"));
        };
        if pairs.iter().any(|(r, _)| r == robot) {
            return Err(format!("robot joint `{robot}` is mapped twice"));
        }
        if pairs.iter().any(|(_, p)| p == policy) {
            return Err(format!("policy joint `{policy}` is mapped twice"));
        }
        pairs.push((robot.to_owned(), policy.to_owned()));
    }
    Ok(pairs)
}

/// One parameter of the node: the table [`super::PARAMETERS`] holds one per parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ros_type: &'static str,
    /// One line, shown by `ros2 param describe`.
    pub description: &'static str,
    /// Whether a change takes effect while the node runs (`ros2 param set`); the others
    /// are read at start-up only.
    pub runtime: bool,
    pub rule: Rule,
}

/// A doc comment's text without the space `///` leaves in front of it.
pub const fn doc_line(s: &'static str) -> &'static str {
    match s.as_bytes() {
        [b' ', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(t) => t,
            Err(_) => s,
        },
        _ => s,
    }
}
