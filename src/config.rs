//! `pbxsync.yaml` → a validated `Config`. Unknown keys are refused (a typo must not
//! silently switch safety off) and every error names the file and line.

pub use crate::policy::{
    DEFAULT_EXTENSION_PATTERN, Delimiter, Encoding, HashParams, PasswordPolicy, Policy,
    ReassignedBecomes, Safety,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "pbxsync.yaml";
pub const DEFAULT_TARGET: &str = "sqlite:.pbxsync/state.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no {FILE_NAME} found in {start} or any parent directory; run `pbxsync init`, pass --config, or use --file"
    )]
    NotFound { start: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoApply {
    #[default]
    Never,
    Safe,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watch {
    pub debounce_ms: u64,
    pub poll_seconds: u64,
    pub auto_apply: AutoApply,
    pub self_heal: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            debounce_ms: 500,
            poll_seconds: 30,
            auto_apply: AutoApply::Never,
            self_heal: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: PathBuf,
    #[serde(rename = "ref", default = "default_ref")]
    rev: String,
}

fn default_ref() -> String {
    "HEAD".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    #[serde(default)]
    inventory: Option<PathBuf>,
    #[serde(default)]
    target: Option<String>,
    /// The schema of a PostgreSQL target.
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    delimiter: Delimiter,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    safety: Safety,
    #[serde(default)]
    watch: Watch,
    #[serde(default)]
    publish: RawPublish,
}

/// Where the current state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUrl {
    Sqlite(PathBuf),
    /// A `postgres://` URL, and the schema of the config key `schema` (else the
    /// URL's search_path, else `pbxsync`).
    Postgres {
        url: String,
        schema: Option<String>,
    },
}

impl TargetUrl {
    /// The target as shown to people: a state file's path relative to the
    /// working directory; a URL without its credentials.
    pub fn shown(&self) -> String {
        match self {
            TargetUrl::Sqlite(p) => format!("sqlite:{}", crate::fsio::shown(p)),
            TargetUrl::Postgres { url, .. } => {
                let (base, query) = match url.split_once('?') {
                    Some((base, query)) => (base, Some(query)),
                    None => (url.as_str(), None),
                };
                let base = match (base.find("://"), base.rfind('@')) {
                    (Some(s), Some(at)) if at > s => {
                        format!("{}***{}", &base[..s + 3], &base[at..])
                    }
                    _ => base.to_owned(),
                };
                // A `password=` parameter, or a piece of the query that is no
                // `key=value` at all (perhaps a pasted password), is hidden too.
                let Some(query) = query else { return base };
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            "password=***".to_owned()
                        }
                        Some((key, _))
                            if key.len() <= 40 && !key.to_ascii_lowercase().contains("pass") =>
                        {
                            pair.to_owned()
                        }
                        _ => "***".to_owned(),
                    })
                    .collect();
                format!("{base}?{}", pairs.join("&"))
            }
        }
    }

    /// The target with the config key `schema`, which only a PostgreSQL target has.
    pub fn with_schema(self, name: &str) -> Result<TargetUrl, String> {
        match self {
            TargetUrl::Postgres { url, .. } if !name.is_empty() => Ok(TargetUrl::Postgres {
                url,
                schema: Some(name.to_owned()),
            }),
            TargetUrl::Postgres { .. } => Err("`schema` must name a schema, e.g. `schema: pbxsync`".into()),
            TargetUrl::Sqlite(_) => Err(
                "`schema` is for a `postgres://` target; a SQLite state file has no schemas (remove the key)"
                    .into(),
            ),
        }
    }

    /// The schema the config names, if any.
    pub fn schema(&self) -> Option<&str> {
        match self {
            TargetUrl::Postgres { schema, .. } => schema.as_deref(),
            TargetUrl::Sqlite(_) => None,
        }
    }

    /// Parses `sqlite:PATH` (relative to `base`) or `postgres://…` (whose
    /// parameters are read when connecting).
    pub fn parse(url: &str, base: &Path) -> Result<TargetUrl, String> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            if rest.is_empty() {
                return Err("`sqlite:` needs a file path, e.g. `sqlite:.pbxsync/state.db`".into());
            }
            Ok(TargetUrl::Sqlite(base.join(rest)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(TargetUrl::Postgres {
                url: url.to_string(),
                schema: None,
            })
        } else {
            Err(format!(
                "unknown target `{url}`: a target is `sqlite:PATH` (e.g. `sqlite:.pbxsync/state.db`) \
                 or `postgres://USER@HOST:PORT/DATABASE`"
            ))
        }
    }
}

/// A validated configuration. Paths are absolute (resolved against the config file's
/// directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file, or `None` when running on defaults (e.g. `validate --file`).
    pub file: Option<PathBuf>,
    /// The directory of the config file (or the working directory).
    pub base_dir: PathBuf,
    pub source_path: PathBuf,
    pub source_ref: String,
    pub inventory: Option<PathBuf>,
    pub target: TargetUrl,
    pub encoding: Encoding,
    pub delimiter: Delimiter,
    pub policy: Policy,
    pub prune: bool,
    pub safety: Safety,
    pub watch: Watch,
    pub publish: Publish,
}

/// `publish`: what the phone system reads, made from the directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// The SIP registrar's relation (Kamailio's `subscriber`), with its domain.
    pub kamailio: Option<Kamailio>,
    /// The desk phones' provisioning files.
    pub provision: Option<Provision>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kamailio {
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    /// The folder of the files (absolute).
    pub dir: PathBuf,
    /// The SIP server the phones register with: `host` or `host:port`.
    pub server: String,
    /// User templates by exact model name (absolute paths).
    pub templates: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    #[serde(default)]
    kamailio: Option<RawKamailio>,
    #[serde(default)]
    provision: Option<RawProvision>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKamailio {
    domain: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvision {
    dir: PathBuf,
    server: String,
    #[serde(default)]
    templates: std::collections::BTreeMap<String, PathBuf>,
}

/// A host name or address as a SIP domain or server may be: letters, digits,
/// `.`, `-`, `_` (and `:`/`[]` for IPv6), nothing a file or a registrar would
/// read as something else.
fn host_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
}

impl Config {
    /// The configuration used when there is no config file.
    pub fn defaults(base_dir: &Path) -> Config {
        Config {
            file: None,
            base_dir: base_dir.to_path_buf(),
            source_path: base_dir.join("users.csv"),
            source_ref: default_ref(),
            inventory: None,
            target: TargetUrl::Sqlite(base_dir.join(".pbxsync/state.db")),
            encoding: Encoding::Auto,
            delimiter: Delimiter::Auto,
            policy: Policy::default(),
            prune: false,
            safety: Safety::default(),
            watch: Watch::default(),
            publish: Publish::default(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        Config::parse(&text, path, &base)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        if let Some(line) = too_deep(text) {
            return Err(invalid(format!(
                "line {line}: collections are nested more than {MAX_DEPTH} deep here; \
                 pbxsync.yaml needs 4 levels at most (is a bracket left open?)"
            )));
        }
        let raw = read_yaml(text).map_err(invalid)?;
        let at = |key: &str| match key_line(text, key) {
            Some(line) => format!("line {line}: "),
            None => String::new(),
        };
        if raw.source.path.as_os_str().is_empty() {
            return Err(invalid(format!(
                "{}`source.path` must name the CSV file",
                at("path")
            )));
        }
        // Compiled as validation will use it (anchored), so what is checked here
        // is what runs.
        if let Err(e) = crate::validate::rules::ExtensionRule::new(&raw.policy.extension_pattern) {
            return Err(invalid(format!(
                "{}`policy.extension_pattern`: {e}; write the pattern that a whole extension must match, e.g. '^[0-9]{{2,8}}$'",
                at("extension_pattern")
            )));
        }
        if raw.safety.max_change_percent > 100 {
            return Err(invalid(format!(
                "{}`safety.max_change_percent` is {}, expected a percentage from 0 to 100",
                at("max_change_percent"),
                raw.safety.max_change_percent
            )));
        }
        if let Err((key, message)) = raw.policy.password_hash.check() {
            let line = key_line(text, key).or_else(|| key_line(text, "password_hash"));
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            return Err(invalid(format!("{at}{message}")));
        }
        if raw.watch.poll_seconds == 0 {
            return Err(invalid(format!(
                "{}`watch.poll_seconds` must be at least 1",
                at("poll_seconds")
            )));
        }
        let target = raw.target.as_deref().unwrap_or(DEFAULT_TARGET);
        let publish = Publish {
            kamailio: match raw.publish.kamailio {
                Some(k) if host_like(&k.domain) => Some(Kamailio { domain: k.domain }),
                Some(k) => {
                    return Err(invalid(format!(
                        "{}`publish.kamailio.domain` must be a host name, e.g. `pbx.example.com` (got {:?})",
                        at("domain"),
                        k.domain
                    )));
                }
                None => None,
            },
            provision: match raw.publish.provision {
                Some(p) => {
                    let (host, port) = match p.server.rsplit_once(':') {
                        Some((h, port)) if !h.contains(':') || h.ends_with(']') => (h, Some(port)),
                        _ => (p.server.as_str(), None),
                    };
                    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|n| n > 0));
                    if !host_like(host) || !port_ok {
                        return Err(invalid(format!(
                            "{}`publish.provision.server` must be `host` or `host:port`, e.g. `pbx.example.com:5060` (got {:?})",
                            at("server"),
                            p.server
                        )));
                    }
                    Some(Provision {
                        dir: base.join(p.dir),
                        server: p.server,
                        templates: p
                            .templates
                            .into_iter()
                            .map(|(model, path)| (model, base.join(path)))
                            .collect(),
                    })
                }
                None => None,
            },
        };
        let mut target = TargetUrl::parse(target, base)
            .map_err(|m| invalid(format!("{}`target`: {m}", at("target"))))?;
        if let Some(name) = raw.schema {
            target = target
                .with_schema(&name)
                .map_err(|m| invalid(format!("{}{m}", at("schema"))))?;
        }
        Ok(Config {
            file: Some(path.to_path_buf()),
            base_dir: base.to_path_buf(),
            source_path: base.join(&raw.source.path),
            source_ref: raw.source.rev,
            inventory: raw.inventory.map(|p| base.join(p)),
            target,
            encoding: raw.encoding,
            delimiter: raw.delimiter,
            policy: raw.policy,
            prune: raw.prune,
            safety: raw.safety,
            watch: raw.watch,
            publish,
        })
    }

    /// Finds `pbxsync.yaml` in `start` or the nearest parent directory that has one.
    pub fn discover(start: &Path) -> Result<PathBuf, ConfigError> {
        let start = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
        start
            .ancestors()
            .map(|dir| dir.join(FILE_NAME))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| ConfigError::NotFound {
                start: start.display().to_string(),
            })
    }
}

/// The raw config of `text`, with YAML's tags taken as YAML means them.
fn read_yaml(text: &str) -> Result<RawConfig, String> {
    let doc = serde_yaml::from_str::<serde_yaml::Value>(text);
    // serde_yaml reads past a tag of its own (`!env DB_URL` would be the target
    // `DB_URL`, `!secret x` the string `x`): pbxsync has none, so one is a
    // mistake worth a word rather than a value nobody wrote.
    if let Ok(doc) = &doc
        && let Some((key, tag)) = local_tag(doc, String::new())
    {
        let at = key
            .rsplit('.')
            .next()
            .and_then(|last| key_line(text, last))
            .map(|line| format!("line {line}: "))
            .unwrap_or_default();
        return Err(format!(
            "{at}`{}` has the YAML tag `{}`, which pbxsync does not know; write the value without it",
            key.escape_debug(),
            tag.escape_debug()
        ));
    }
    serde_yaml::from_str::<RawConfig>(text).or_else(|e| {
        // serde_yaml 0.9 takes a quoted value with a standard tag (`!!bool "true"`,
        // `!!int "5"`, which YAML reads as `true` and `5`) only into a `Value`, and
        // refuses it otherwise with "invalid type: boolean `true`, expected a
        // boolean". Such a document is read through a `Value`; when that fails
        // too, the first error, which knows the line, is the one shown.
        doc.and_then(serde_yaml::from_value)
            .map_err(|_| yaml_message(&e))
    })
}

/// The first value of `doc` under a tag of its own (`!name`, not one of YAML's
/// `!!` tags, which serde_yaml resolves), with its dotted key.
fn local_tag(doc: &serde_yaml::Value, key: String) -> Option<(String, String)> {
    match doc {
        serde_yaml::Value::Tagged(tagged) => Some((key, tagged.tag.to_string())),
        serde_yaml::Value::Mapping(map) => map.iter().find_map(|(k, v)| {
            let name = match k {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            let key = if key.is_empty() {
                name
            } else {
                format!("{key}.{name}")
            };
            local_tag(v, key)
        }),
        serde_yaml::Value::Sequence(items) => items.iter().find_map(|v| local_tag(v, key.clone())),
        _ => None,
    }
}

/// serde_yaml says "source: unknown field `reff`, expected `path` or `ref` at line 3
/// column 3"; we say "line 3: unknown key `source.reff` (expected `path` or `ref`)".
fn yaml_message(e: &serde_yaml::Error) -> String {
    let full = e.to_string();
    let body = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full,
    };
    let (prefix, body) = match body.split_once(": ") {
        Some((p, b)) if !p.contains(' ') => (format!("{p}."), b.to_string()),
        _ => (String::new(), body.to_string()),
    };
    let body = match body.strip_prefix("unknown field `") {
        Some(rest) => match rest.split_once("`, expected ") {
            Some((key, expected)) => {
                format!("unknown key `{prefix}{key}` (expected {expected}); check its spelling")
            }
            None => format!("unknown key `{prefix}{}", rest),
        },
        None => match body.strip_prefix("unknown variant ") {
            Some(rest) => format!(
                "`{}` has an unknown value {}",
                prefix.trim_end_matches('.'),
                rest
            ),
            None if prefix.is_empty() => body,
            None => format!("`{}`: {body}", prefix.trim_end_matches('.')),
        },
    };
    match e.location() {
        Some(loc) => format!("line {}: {body}", loc.line()),
        None => body,
    }
}

/// The deepest nesting of collections a config may have. pbxsync.yaml needs four
/// levels (`publish.provision.templates.MODEL`); the YAML parser takes time that
/// grows with the square of the depth of flow collections (`[[[[…]]]]`: 50,000
/// levels took 4 s, 100,000 a minute), so deeper text is refused before parsing.
pub const MAX_DEPTH: usize = 32;

/// The first line where `text` nests collections more than `MAX_DEPTH` deep, or
/// `None`. One pass, without parsing: block levels are counted by indentation
/// and by `- ` entries on one line, flow levels by the brackets `[` and `{` that
/// open a collection (at the start of a value, or inside another flow
/// collection); quoted scalars, block scalars (`|`, `>`) and comments are skipped,
/// and a bracket inside a plain scalar (`^[0-9]{2,8}$`) opens nothing.
fn too_deep(text: &str) -> Option<usize> {
    // Indentation of the enclosing block collections.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that goes on over lines: its quote.
    let mut quote: Option<u8> = None;
    // Inside a block scalar: the indentation of the line that started it.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let blank = bytes[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        // Whether a value may start here (a quote or bracket then opens one).
        let mut value_start = true;
        let mut entries = 0usize;
        if quote.is_none() && flow == 0 {
            if blank || bytes[indent] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            i = indent;
        }
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = quote {
                match b {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if b == q => {
                        quote = None;
                        value_start = false;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            let space_after = bytes.get(i + 1).is_none_or(|c| c.is_ascii_whitespace());
            match b {
                b' ' | b'\t' => {}
                b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => break,
                b'"' | b'\'' if value_start => quote = Some(b),
                b'[' | b'{' if value_start || flow > 0 => {
                    flow += 1;
                    value_start = true;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                b',' if flow > 0 => value_start = true,
                b'-' if value_start && flow == 0 && space_after => {
                    entries += 1;
                    value_start = true;
                }
                b':' | b'?' if space_after => value_start = true,
                b'|' | b'>' if value_start && flow == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => value_start = false,
            }
            if indents.len() + entries + flow > MAX_DEPTH {
                return Some(n + 1);
            }
            i += 1;
        }
    }
    None
}

/// The first line that sets `key:` (for messages about values serde accepted).
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.starts_with(key) && l[key.len()..].trim_start().starts_with(':')
        })
        .map(|i| i + 1)
}

impl crate::validate::Policy {
    /// The rules of a config (defined here: the core knows the policy types, not
    /// the config file).
    pub fn from_config(config: &Config) -> crate::validate::Policy {
        crate::validate::Policy::new(
            crate::csv::ReadOptions {
                encoding: config.encoding,
                delimiter: config.delimiter,
            },
            &config.policy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("pbxsync.yaml"), Path::new("/repo"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let c = parse("source:\n  path: users.csv\n").unwrap();
        assert_eq!(c.source_path, Path::new("/repo/users.csv"));
        assert_eq!(c.source_ref, "HEAD");
        assert_eq!(
            c.target,
            TargetUrl::Sqlite("/repo/.pbxsync/state.db".into())
        );
        assert_eq!(c.encoding, Encoding::Auto);
        assert_eq!(
            c.policy.password,
            PasswordPolicy {
                min_length: 8,
                min_upper: 1,
                min_digits: 2
            }
        );
        assert_eq!(
            c.policy.password_hash,
            HashParams {
                m_cost_kib: 19456,
                t_cost: 2,
                p_cost: 1
            }
        );
        assert_eq!(c.policy.extension_pattern, "^[0-9]{2,8}$");
        assert!(!c.policy.allow_apostrophes);
        assert_eq!(
            c.policy.reassigned_extension_becomes,
            ReassignedBecomes::Virtual
        );
        assert!(!c.prune);
        assert_eq!(
            c.safety,
            Safety {
                max_change_percent: 30,
                min_existing: 10
            }
        );
        assert_eq!(c.watch.auto_apply, AutoApply::Never);
        assert_eq!(
            (c.watch.debounce_ms, c.watch.poll_seconds, c.watch.self_heal),
            (500, 30, false)
        );
    }

    #[test]
    fn every_key_of_the_spec_is_accepted() {
        let c = parse(
            "source:\n  path: dir/users.csv\n  ref: main\ninventory: devices.csv\ntarget: postgres://pbx@db:5432/pbx\n\
             encoding: windows-1252\ndelimiter: ';'\npolicy:\n  password: { min_length: 10, min_upper: 2, min_digits: 3 }\n\
             \x20 password_hash: { m_cost_kib: 64, t_cost: 1, p_cost: 1 }\n  extension_pattern: '^[0-9]{3,4}$'\n\
             \x20 allow_apostrophes: true\n  reassigned_extension_becomes: voicemail_only\nprune: true\n\
             safety: { max_change_percent: 50, min_existing: 5 }\n\
             watch: { debounce_ms: 100, poll_seconds: 5, auto_apply: safe, self_heal: true }\n",
        )
        .unwrap();
        assert_eq!(c.source_path, Path::new("/repo/dir/users.csv"));
        assert_eq!(c.source_ref, "main");
        assert_eq!(c.inventory.as_deref(), Some(Path::new("/repo/devices.csv")));
        assert_eq!(
            c.target,
            TargetUrl::Postgres {
                url: "postgres://pbx@db:5432/pbx".into(),
                schema: None
            }
        );
        assert_eq!(c.encoding, Encoding::Windows1252);
        assert_eq!(c.delimiter, Delimiter::Char(b';'));
        assert_eq!(c.policy.password.min_digits, 3);
        assert_eq!(
            c.policy.reassigned_extension_becomes,
            ReassignedBecomes::VoicemailOnly
        );
        assert!(c.policy.allow_apostrophes && c.prune && c.watch.self_heal);
        assert_eq!(c.safety.max_change_percent, 50);
        assert_eq!(c.watch.auto_apply, AutoApply::Safe);
    }

    #[test]
    fn a_misspelt_key_is_named_with_its_line() {
        let e =
            parse("source:\n  path: users.csv\nsafety:\n  max_change_percnt: 50\n").unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("unknown key `safety.max_change_percnt`"), "{e}");
        let e = parse("source:\n  path: users.csv\nprun: true\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("`prun`"), "{e}");
    }

    #[test]
    fn a_bad_value_names_the_allowed_ones() {
        let e = parse("source:\n  path: users.csv\nwatch:\n  auto_apply: sometimes\n").unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        assert!(
            e.contains("`sometimes`") && e.contains("`never`, `safe`, `always`"),
            "{e}"
        );
        let e = parse("source:\n  path: users.csv\nencoding: latin9\n").unwrap_err();
        assert!(e.contains("`auto`") && e.contains("`utf-8`"), "{e}");
    }

    #[test]
    fn source_path_is_required_and_checked_values_are_refused() {
        assert!(parse("prune: true\n").unwrap_err().contains("source"));
        let e = parse("source: {path: u.csv}\npolicy:\n  extension_pattern: '[0-9'\n").unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("extension_pattern"),
            "{e}"
        );
        let e = parse("source: {path: u.csv}\npolicy:\n  extension_pattern: ''\n").unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("`policy.extension_pattern`") && e.contains("empty"),
            "{e}"
        );
        let e = parse("source: {path: u.csv}\nsafety: {max_change_percent: 300}\n").unwrap_err();
        assert!(e.contains("0 to 100"), "{e}");
        let e = parse("source: {path: u.csv}\ntarget: mysql://x\n").unwrap_err();
        assert!(e.contains("sqlite:PATH"), "{e}");
    }

    #[test]
    fn a_postgres_target_takes_a_schema_and_is_shown_without_secrets() {
        let c = parse("source: {path: u.csv}\ntarget: postgres://pbx@db/pbx\nschema: office\n")
            .unwrap();
        assert_eq!(c.target.schema(), Some("office"));
        let e = parse("source: {path: u.csv}\nschema: office\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("`schema` is for a `postgres://` target"),
            "{e}"
        );
        let e = parse("source: {path: u.csv}\ntarget: postgres://pbx@db/pbx\nschema: ''\n")
            .unwrap_err();
        assert!(e.contains("must name a schema"), "{e}");
        let shown = |url: &str| {
            TargetUrl::Postgres {
                url: url.into(),
                schema: None,
            }
            .shown()
        };
        assert_eq!(
            shown("postgres://pbx:hunter22@db:5432/pbx"),
            "postgres://***@db:5432/pbx"
        );
        assert_eq!(
            shown("postgres://db/pbx?sslmode=require&password=hunter22&hunter23"),
            "postgres://db/pbx?sslmode=require&password=***&***"
        );
    }

    #[test]
    fn password_hash_parameters_are_bounded_and_the_message_names_the_key() {
        let with = |h: &str| {
            parse(&format!(
                "source: {{path: u.csv}}\npolicy:\n  password_hash: {h}\n"
            ))
        };
        for (h, expected) in [
            (
                "{t_cost: 4294967295}",
                "`policy.password_hash.t_cost` is 4294967295; it must be from 1 to 256",
            ),
            (
                "{t_cost: 0}",
                "`policy.password_hash.t_cost` is 0; it must be from 1 to 256",
            ),
            (
                "{p_cost: 0}",
                "`policy.password_hash.p_cost` is 0; it must be from 1 to 64",
            ),
            (
                "{p_cost: 16777215}",
                "`policy.password_hash.p_cost` is 16777215; it must be from 1 to 64",
            ),
            (
                "{m_cost_kib: 4294967295}",
                "`policy.password_hash.m_cost_kib` is 4294967295; it must be from 8 × p_cost (8) to 4194304 (4 GiB)",
            ),
            (
                "{m_cost_kib: 16, p_cost: 4}",
                "`policy.password_hash.m_cost_kib` is 16; it must be from 8 × p_cost (32)",
            ),
            (
                "{m_cost_kib: 1048576, t_cost: 5}",
                "m_cost_kib × t_cost is 5242880, and at most 4194304",
            ),
        ] {
            let e = with(h).unwrap_err();
            assert!(e.contains("line 3: ") && e.contains(expected), "{h}: {e}");
        }
        // The bounds themselves are accepted, and so are the usual settings
        // (OWASP's, RFC 9106's two, libsodium's "sensitive").
        for h in [
            "{m_cost_kib: 8, t_cost: 1, p_cost: 1}",
            "{m_cost_kib: 4194304, t_cost: 1, p_cost: 64}",
            "{m_cost_kib: 16384, t_cost: 256, p_cost: 1}",
            "{m_cost_kib: 19456, t_cost: 2, p_cost: 1}",
            "{m_cost_kib: 2097152, t_cost: 1, p_cost: 4}",
            "{m_cost_kib: 65536, t_cost: 3, p_cost: 4}",
            "{m_cost_kib: 1048576, t_cost: 4, p_cost: 1}",
        ] {
            assert!(with(h).is_ok(), "{h}: {:?}", with(h));
        }
        // Block style: the line of the key itself.
        let e = parse("source: {path: u.csv}\npolicy:\n  password_hash:\n    m_cost_kib: 64\n    t_cost: 999\n")
            .unwrap_err();
        assert!(
            e.contains("line 5: `policy.password_hash.t_cost` is 999"),
            "{e}"
        );
    }

    #[test]
    fn over_deep_nesting_is_refused_before_parsing() {
        let head = "source:\n  path: users.csv\n";
        let n = 100_000;
        for (deep, line) in [
            (format!("watch: {}{}\n", "[".repeat(n), "]".repeat(n)), 3),
            (
                format!("watch: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
                3,
            ),
            (format!("watch:\n  {}x\n", "- ".repeat(n)), 4),
            // Open brackets on lines of their own: the line where it gets too deep.
            (format!("watch:\n{}", "  [\n".repeat(n)), 3 + MAX_DEPTH - 1),
        ] {
            let e = parse(&format!("{head}{deep}")).unwrap_err();
            assert!(
                e.contains(&format!(
                    "line {line}: collections are nested more than 32 deep"
                )),
                "{e}"
            );
        }
        let block: String = (0..40)
            .map(|k| format!("{}k{k}:\n", " ".repeat(k + 2)))
            .collect();
        let e = parse(&format!("{head}watch:\n{block}")).unwrap_err();
        assert!(e.contains(&format!("line {}:", 3 + MAX_DEPTH)), "{e}");
    }

    #[test]
    fn brackets_that_open_nothing_do_not_count_as_depth() {
        let many = "[".repeat(100);
        for text in [
            format!("policy:\n  extension_pattern: ^{many}x\n"),
            format!("policy:\n  extension_pattern: '{many}'\n"),
            format!("policy:\n  extension_pattern: \"\\\"{many}\"\n"),
            format!("policy:\n  extension_pattern: 'it''s {many}'\n"),
            format!("# {many}\npolicy: {{allow_apostrophes: true}} # {many}\n"),
            format!("policy:\n  extension_pattern: >\n    {many}\n\n    {many}\nprune: true\n"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
        let nested = "publish:\n  provision:\n    templates: { \"Acme X1\": [a, {b: [c]}] }\n";
        assert_eq!(too_deep(nested), None);
    }

    #[test]
    fn discovery_walks_up_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "source: {path: users.csv}\n").unwrap();
        assert_eq!(
            Config::discover(&nested).unwrap(),
            dir.path().join(FILE_NAME)
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            Config::discover(empty.path())
                .unwrap_err()
                .to_string()
                .contains("pbxsync init")
        );
    }
}
