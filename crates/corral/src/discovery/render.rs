//! What a dependent gets from discovery: environment variables, a JSON file
//! of its endpoints, and rendered templates.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use corral_proto::Endpoint;

use super::env_prefix;
use crate::config::Template;

/// NAME_ADDR (the first endpoint), NAME_HOST, NAME_PORT and NAME_ADDRS (all,
/// comma-separated, stable order) for every required name with endpoints.
pub fn endpoint_env(sets: &BTreeMap<String, Vec<Endpoint>>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, endpoints) in sets {
        let Some(first) = endpoints.first() else {
            continue;
        };
        let p = env_prefix(name);
        env.push((format!("{p}_ADDR"), first.addr()));
        env.push((format!("{p}_HOST"), first.host.clone()));
        env.push((format!("{p}_PORT"), first.port.to_string()));
        let all: Vec<String> = endpoints.iter().map(Endpoint::addr).collect();
        env.push((format!("{p}_ADDRS"), all.join(",")));
    }
    env
}

/// Writes `{name: [endpoint, ...]}` to `path` atomically (temp file + rename).
pub fn write_endpoints_file(
    path: &Path,
    sets: &BTreeMap<String, Vec<Endpoint>>,
) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(sets).map_err(std::io::Error::other)?;
    write_atomically(path, &json, None)
}

/// Renders each template from the endpoint sets; a target is rewritten only
/// when its text changes. Returns how many targets changed.
pub fn render_templates(
    templates: &[Template],
    sets: &BTreeMap<String, Vec<Endpoint>>,
    service: &str,
    replica: Option<u32>,
    service_env: &[(String, String)],
) -> Result<usize, String> {
    let mut changed = 0;
    if templates.is_empty() {
        return Ok(0);
    }
    let mut engine = upon::Engine::new();
    // `{{ e.instance | replace: ":", "_" }}`
    engine.add_function("replace", |s: &str, from: &str, to: &str| {
        s.replace(from, to)
    });
    engine.add_function("join", |list: &[upon::Value], sep: &str| {
        list.iter()
            .map(|v| match v {
                upon::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(sep)
    });
    let ctx = TemplateContext {
        endpoints: sets
            .iter()
            .map(|(name, list)| {
                (
                    name.as_str(),
                    list.iter().map(TemplateEndpoint::from).collect(),
                )
            })
            .collect(),
        service,
        replica,
        env: service_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    for t in templates {
        let source = crate::config::files::read_to_string(&t.source)
            .map_err(|e| format!("cannot read template {}: {e}", t.source.display()))?;
        let text = engine
            .compile(source.as_str())
            .and_then(|tpl| tpl.render(&engine, &ctx).to_string())
            .map_err(|e| format!("template {}: {e}", t.source.display()))?;
        if std::fs::read(&t.target).ok().as_deref() == Some(text.as_bytes()) {
            continue;
        }
        write_atomically(&t.target, text.as_bytes(), t.mode)
            .map_err(|e| format!("cannot write {}: {e}", t.target.display()))?;
        changed += 1;
    }
    Ok(changed)
}

/// What a template sees.
#[derive(serde::Serialize)]
struct TemplateContext<'a> {
    /// Required name -> its endpoints, in stable order.
    endpoints: BTreeMap<&'a str, Vec<TemplateEndpoint<'a>>>,
    service: &'a str,
    replica: Option<u32>,
    /// The service's environment.
    env: BTreeMap<&'a str, &'a str>,
}

/// An endpoint in a template, with its "host:port" ready.
#[derive(serde::Serialize)]
struct TemplateEndpoint<'a> {
    name: &'a str,
    host: &'a str,
    port: u16,
    addr: String,
    tags: &'a [String],
    attrs: &'a BTreeMap<String, String>,
    instance: &'a str,
}

impl<'a> From<&'a Endpoint> for TemplateEndpoint<'a> {
    fn from(e: &'a Endpoint) -> Self {
        TemplateEndpoint {
            name: &e.name,
            host: &e.host,
            port: e.port,
            addr: e.addr(),
            tags: &e.tags,
            attrs: &e.attrs,
            instance: &e.instance,
        }
    }
}

/// Writes a temp file beside `path` and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(format!(".corral-{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if let Some(mode) = mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::contract::ep;

    #[test]
    fn env_names_the_first_and_lists_all() {
        let mut sets = BTreeMap::new();
        sets.insert(
            "my-db".to_string(),
            vec![ep("my-db", "h:db.0", 5432), ep("my-db", "h:db.1", 5433)],
        );
        let env = endpoint_env(&sets);
        assert!(env.contains(&("MY_DB_ADDR".into(), "127.0.0.1:5432".into())));
        assert!(env.contains(&("MY_DB_PORT".into(), "5432".into())));
        assert!(env.contains(&("MY_DB_ADDRS".into(), "127.0.0.1:5432,127.0.0.1:5433".into())));
    }

    #[test]
    fn templates_render_and_are_rewritten_only_on_change() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("t.tmpl");
        std::fs::write(
            &source,
            "{% for e in endpoints.api %}server {{ e.instance | replace: \":\", \"_\" }} {{ e.addr }}\n{% endfor %}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("out.cfg");
        let t = vec![Template {
            source,
            target: target.clone(),
            mode: Some(0o640),
        }];
        let mut sets = BTreeMap::new();
        sets.insert("api".to_string(), vec![ep("api", "h:api.0", 8000)]);
        assert_eq!(render_templates(&t, &sets, "proxy", None, &[]), Ok(1));
        assert_eq!(
            std::fs::read_to_string(&target).unwrap_or_default(),
            "server h_api.0 127.0.0.1:8000\n"
        );
        assert_eq!(render_templates(&t, &sets, "proxy", None, &[]), Ok(0));
    }
}
