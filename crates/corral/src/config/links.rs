//! What ties a service to others: `depends-on`, and discovery's `provides`,
//! `requires`, `on-change` and `templates`. Read once, expanded per instance.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::de::DeValue;

use super::diag::Diagnostics;
use super::host::HostChecks;
use super::interp::Vars;
use super::values::{
    argv, boolean, condition, entries, expand_all, parse_signal, read_fields, set, string,
    string_list, string_map, table, text, type_error, Field, Text, Value,
};
use super::{Condition, OnChange, Provide, Require, Template};

/// A `depends-on` entry before the name is resolved to a service.
pub struct RawDependency {
    pub name: String,
    pub span: Range<usize>,
    pub condition: Condition,
    pub restart: bool,
}

pub fn dependencies(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<RawDependency> {
    let mut out = Vec::new();
    match v.get_ref() {
        DeValue::Array(items) => {
            for item in items.iter() {
                if let DeValue::String(s) = item.get_ref() {
                    out.push(RawDependency {
                        name: s.to_string(),
                        span: item.span(),
                        condition: Condition::Started,
                        restart: false,
                    });
                } else {
                    type_error(d, item, "a service name");
                }
            }
        }
        DeValue::Table(t) => {
            for (name, cond) in t.iter() {
                let entry = match cond.get_ref() {
                    DeValue::String(_) => condition(d, cond).map(|c| (c, false)),
                    DeValue::Table(ct) => {
                        let mut e = DependencyEntry {
                            condition: Some(Condition::Started),
                            restart: false,
                        };
                        let where_ = "in a depends-on entry";
                        read_fields(d, ct, &DEPENDENCY_FIELDS, &mut e, where_);
                        e.condition.map(|c| (c, e.restart))
                    }
                    _ => {
                        let expected = "a condition (\"started\", \"ready\" or \"completed\")";
                        type_error(d, cond, expected);
                        None
                    }
                };
                if let Some((condition, restart)) = entry {
                    out.push(RawDependency {
                        name: name.get_ref().to_string(),
                        span: name.span(),
                        condition,
                        restart,
                    });
                }
            }
        }
        _ => type_error(d, v, "a list of service names or a table of conditions"),
    }
    out
}

struct DependencyEntry {
    condition: Option<Condition>,
    restart: bool,
}

const DEPENDENCY_FIELDS: [Field<DependencyEntry>; 2] = [
    ("condition", |e, d, v| e.condition = condition(d, v)),
    ("restart", |e, d, v| set(&mut e.restart, boolean(d, v))),
];

/// A `provides` entry as written: its port and host are interpolated per
/// instance (`port = "${PORT}"`).
#[derive(Debug, Clone, Default)]
pub struct ProvideDraft {
    name: Option<String>,
    port: Option<Text>,
    host: Option<Text>,
    tags: Vec<String>,
    attrs: BTreeMap<String, String>,
}

const PROVIDE_FIELDS: [Field<ProvideDraft>; 5] = [
    ("name", |p, d, v| p.name = string(d, v).map(str::to_string)),
    ("port", read_port),
    ("host", |p, d, v| p.host = text(d, v)),
    ("tags", |p, d, v| p.tags = string_list(d, v)),
    ("attrs", |p, d, v| p.attrs = string_map(d, v)),
];

fn read_port(p: &mut ProvideDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.port = match v.get_ref() {
        DeValue::Integer(i) => Some(Text {
            raw: i.as_str().to_string(),
            span: v.span(),
        }),
        DeValue::String(_) => text(d, v),
        _ => {
            type_error(d, v, "a port number or \"${PORT}\"");
            None
        }
    };
}

pub fn provide_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<ProvideDraft> {
    let mut out = Vec::new();
    for item in entries(d, v, "tables like { name = \"api\", port = 8000 }") {
        let Some(t) = table(d, item, "a provides entry") else {
            continue;
        };
        let mut p = ProvideDraft::default();
        read_fields(d, t, &PROVIDE_FIELDS, &mut p, "in a provides entry");
        match (&p.name, t.contains_key("port")) {
            (None, _) => d.error(item.span(), "a provides entry needs a `name`"),
            (_, false) => d.error(item.span(), "a provides entry needs a `port`"),
            _ => out.push(p),
        }
    }
    out
}

impl ProvideDraft {
    pub fn provide(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<Provide> {
        let port_text = self.port.as_ref()?;
        let expanded = port_text.expand(d, vars)?;
        let port = match expanded.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                d.error(port_text.span.clone(), format!("invalid port {expanded:?}"));
                return None;
            }
        };
        let host = match &self.host {
            Some(h) => Some(h.expand(d, vars)?),
            None => None,
        };
        Some(Provide {
            name: self.name.clone()?,
            port,
            host,
            tags: self.tags.clone(),
            attrs: self.attrs.clone(),
        })
    }
}

const REQUIRE_FIELDS: [Field<Require>; 3] = [
    ("name", |r, d, v| {
        set(&mut r.name, string(d, v).map(str::to_string))
    }),
    ("tags", |r, d, v| r.tags = string_list(d, v)),
    ("attrs", |r, d, v| r.attrs = string_map(d, v)),
];

pub fn require_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<Require> {
    let mut out = Vec::new();
    let what = "names or tables like { name = \"api\", tags = [\"v2\"] }";
    for item in entries(d, v, what) {
        let mut req = Require {
            name: String::new(),
            tags: Vec::new(),
            attrs: BTreeMap::new(),
        };
        match item.get_ref() {
            DeValue::String(s) => req.name = s.to_string(),
            DeValue::Table(t) => {
                read_fields(d, t, &REQUIRE_FIELDS, &mut req, "in a requires entry");
                if req.name.is_empty() {
                    d.error(item.span(), "a requires entry needs a `name`");
                    continue;
                }
            }
            _ => {
                type_error(d, item, "a name or a table");
                continue;
            }
        }
        out.push(req);
    }
    out
}

/// `on-change` as written: a command's words are interpolated per instance.
#[derive(Debug, Clone)]
pub enum OnChangeDraft {
    Ready(OnChange),
    Command(Vec<Text>),
}

pub fn on_change_action(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<OnChangeDraft> {
    match v.get_ref() {
        DeValue::String(s) => match s.as_ref() {
            "restart" => Some(OnChangeDraft::Ready(OnChange::Restart)),
            "none" => Some(OnChangeDraft::Ready(OnChange::None)),
            other => match other.strip_prefix("signal:") {
                Some(sig) => match parse_signal(sig) {
                    Some(sig) => Some(OnChangeDraft::Ready(OnChange::Signal(sig))),
                    None => {
                        d.error(v.span(), format!("unknown signal {sig:?} in on-change"));
                        None
                    }
                },
                None => {
                    d.error(
                        v.span(),
                        format!("unknown on-change {other:?}: use \"restart\", \"signal:SIGHUP\", \"none\" or a command array"),
                    );
                    None
                }
            },
        },
        DeValue::Array(_) => argv(d, v, "on-change").map(OnChangeDraft::Command),
        _ => {
            let expected = "\"restart\", \"signal:SIG\", \"none\" or a command array";
            type_error(d, v, expected);
            None
        }
    }
}

impl OnChangeDraft {
    pub fn action(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<OnChange> {
        match self {
            OnChangeDraft::Ready(action) => Some(action.clone()),
            OnChangeDraft::Command(words) => expand_all(d, words, vars).map(OnChange::Command),
        }
    }
}

/// A `templates` entry as written.
#[derive(Debug, Clone, Default)]
pub struct TemplateDraft {
    source: Option<Text>,
    target: Option<Text>,
    mode: Option<u32>,
    span: Range<usize>,
}

const TEMPLATE_FIELDS: [Field<TemplateDraft>; 3] = [
    ("source", |t, d, v| t.source = text(d, v)),
    ("target", |t, d, v| t.target = text(d, v)),
    ("mode", read_mode),
];

fn read_mode(t: &mut TemplateDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    t.mode = match v.get_ref() {
        DeValue::String(s) => match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
            Ok(m) => Some(m),
            Err(_) => {
                let message = format!("invalid mode {s:?}: write it in octal, like \"0644\"");
                d.error(v.span(), message);
                None
            }
        },
        _ => {
            type_error(d, v, "an octal mode such as \"0644\"");
            None
        }
    }
}

pub fn template_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<TemplateDraft> {
    let mut out = Vec::new();
    for item in entries(d, v, "tables like { source = \"x.tmpl\", target = \"x\" }") {
        let Some(t) = table(d, item, "a templates entry") else {
            continue;
        };
        let mut draft = TemplateDraft {
            span: item.span(),
            ..TemplateDraft::default()
        };
        read_fields(d, t, &TEMPLATE_FIELDS, &mut draft, "in a templates entry");
        if draft.source.is_some() && draft.target.is_some() {
            out.push(draft);
        } else {
            d.error(item.span(), "a templates entry needs `source` and `target`");
        }
    }
    out
}

impl TemplateDraft {
    /// The template of one instance; its source must exist (checked on disk).
    pub fn template(
        &self,
        d: &mut Diagnostics<'_>,
        vars: &dyn Vars,
        base_dir: &Path,
        checks: &HostChecks,
    ) -> Option<Template> {
        let source = base_dir.join(self.source.as_ref()?.expand(d, vars)?);
        let target = base_dir.join(self.target.as_ref()?.expand(d, vars)?);
        checks.template_source(d, &source, self.span.clone());
        Some(Template {
            source,
            target,
            mode: self.mode,
        })
    }
}
