//! What goes into each device's file: the built-in Yealink and Polycom
//! templates, the user templates (minijinja), and the choice between them by the
//! device's model. Pure apart from reading the user templates once.

use super::ProvisionError;
use crate::model::Phone;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The port phones register on when `server` names none.
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// `settings.server`, taken apart: `host`, `host:port`, `[v6]` or `[v6]:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipServer {
    pub host: String,
    pub port: u16,
}

impl SipServer {
    pub fn parse(server: &str) -> Result<SipServer, ProvisionError> {
        let bad = |why: &str| ProvisionError::Server {
            server: server.to_owned(),
            why: why.to_owned(),
        };
        let s = server.trim();
        if s.chars().any(char::is_control) {
            return Err(bad("it holds a control character"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address opened with `[` is not closed with `]`"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("expected `:port` after `]`"))?,
                    ),
                ),
            }
        } else {
            match s.split_once(':') {
                // A bare IPv6 address has several colons and no port.
                Some((host, port)) if !port.contains(':') => (host, Some(port)),
                _ => (s, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            None => DEFAULT_SIP_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        Ok(SipServer {
            host: host.to_owned(),
            port,
        })
    }
}

/// Which template makes a device's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A user template, by the exact model name it is configured for.
    User(&'a str),
    Yealink,
    Polycom,
}

/// The template for `model`: a user template for exactly that name first, then
/// the built-ins by the model's prefix (case-insensitive); `None` when nothing
/// covers it.
pub fn choose<'a>(model: &str, users: &'a BTreeMap<String, PathBuf>) -> Option<Kind<'a>> {
    if let Some((name, _)) = users.get_key_value(model) {
        return Some(Kind::User(name));
    }
    let starts = |prefix: &str| {
        model
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if starts("yealink") {
        Some(Kind::Yealink)
    } else if starts("polycom") {
        Some(Kind::Polycom)
    } else {
        None
    }
}

/// One device's file, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub name: String,
    pub content: String,
}

/// A MAC in the canonical form: 12 hex digits. Anything else never becomes a
/// file name (it could hold a `/`).
pub fn is_mac(device: &str) -> bool {
    device.len() == 12 && device.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A value on one line of a Yealink file: control characters (CR and LF among
/// them) and Unicode line and paragraph separators become spaces, so that no
/// value can start a line (and with it a key) of its own.
fn one_line(value: &str, out: &mut String) {
    for c in value.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

/// A value inside an XML attribute in double quotes: the five markup characters
/// as entities, and control characters (most of which XML 1.0 forbids, and a
/// newline that an attribute would fold into a space anyway) as spaces.
fn xml_attribute(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{FFFE}' | '\u{FFFF}' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// The built-in Yealink file: `<mac>.cfg` in lower case, the `#!version`
/// header Yealink's auto-provisioning requires on the first line, account 1.
pub fn yealink(phone: &Phone, server: &SipServer) -> Rendered {
    let mut c = String::with_capacity(320);
    c.push_str("#!version:1.0.0.1\n");
    let mut key = |key: &str, value: &str| {
        c.push_str("account.1.");
        c.push_str(key);
        c.push_str(" = ");
        one_line(value, &mut c);
        c.push('\n');
    };
    key("enable", "1");
    key("label", &phone.extension);
    key("display_name", &phone.display_name);
    key("auth_name", &phone.extension);
    key("user_name", &phone.extension);
    key("password", phone.sip_secret.expose());
    key("sip_server.1.address", &server.host);
    key("sip_server.1.port", itoa(server.port).as_str());
    Rendered {
        name: format!("{}.cfg", phone.device.to_ascii_lowercase()),
        content: c,
    }
}

/// The built-in Polycom file: `<MAC>.cfg` in upper case, UC Software's
/// `PHONE_CONFIG` with line 1's `reg.1.*` parameters.
pub fn polycom(phone: &Phone, server: &SipServer) -> Rendered {
    let mut c = String::with_capacity(480);
    c.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n");
    c.push_str("<PHONE_CONFIG>\n  <ALL\n");
    let mut attr = |key: &str, value: &str| {
        c.push_str("    ");
        c.push_str(key);
        c.push_str("=\"");
        xml_attribute(value, &mut c);
        c.push_str("\"\n");
    };
    attr("reg.1.address", &phone.extension);
    attr("reg.1.label", &phone.extension);
    attr("reg.1.displayName", &phone.display_name);
    attr("reg.1.auth.userId", &phone.extension);
    attr("reg.1.auth.password", phone.sip_secret.expose());
    attr("reg.1.server.1.address", &server.host);
    attr("reg.1.server.1.port", itoa(server.port).as_str());
    c.push_str("  />\n</PHONE_CONFIG>\n");
    Rendered {
        name: format!("{}.cfg", phone.device.to_ascii_uppercase()),
        content: c,
    }
}

fn itoa(n: u16) -> String {
    let mut s = String::with_capacity(5);
    let _ = write!(s, "{n}");
    s
}

/// The variable a user template may set (at its top level) to name its file.
pub const FILE_NAME_VARIABLE: &str = "file_name";

/// The user templates, read and compiled once per run.
pub struct UserTemplates {
    env: minijinja::Environment<'static>,
}

impl UserTemplates {
    /// Reads and compiles every template of `templates` (model → path). The
    /// environment has no loader (a template cannot include another file), no
    /// auto-escaping (these are plain configuration files) and strict undefined
    /// (a misspelt variable is an error, not an empty string).
    pub fn load(templates: &BTreeMap<String, PathBuf>) -> Result<UserTemplates, ProvisionError> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // A configuration file ends with a newline as its template does.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        for (model, path) in templates {
            let source =
                std::fs::read_to_string(path).map_err(|source| ProvisionError::TemplateRead {
                    model: model.clone(),
                    template: path.clone(),
                    source,
                })?;
            env.add_template_owned(model.clone(), source)
                .map_err(|e| template_error(path, &e))?;
        }
        Ok(UserTemplates { env })
    }

    /// Renders the template of `model` (one `load` was given) for `phone`.
    pub fn render(
        &self,
        model: &str,
        path: &Path,
        phone: &Phone,
        server: &SipServer,
    ) -> Result<Rendered, ProvisionError> {
        let template = self
            .env
            .get_template(model)
            .map_err(|e| template_error(path, &e))?;
        let mac = phone.device.to_ascii_lowercase();
        let ctx = minijinja::context! {
            extension => phone.extension.as_str(),
            display_name => phone.display_name.as_str(),
            sip_server => server.host.as_str(),
            sip_port => server.port,
            auth_user => phone.extension.as_str(),
            sip_secret => phone.sip_secret.expose(),
            mac => mac.as_str(),
            mac_upper => phone.device.to_ascii_uppercase().as_str(),
            model => phone.model.as_str(),
        };
        let captured = template
            .render_captured(ctx)
            .map_err(|e| template_error(path, &e))?;
        let name = match captured.state().lookup(FILE_NAME_VARIABLE) {
            None => format!("{mac}.cfg"),
            Some(v) => {
                let name = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                if !is_plain_file_name(&name) {
                    return Err(ProvisionError::FileName {
                        template: path.to_path_buf(),
                        device: phone.device.to_string(),
                        name,
                    });
                }
                name
            }
        };
        Ok(Rendered {
            name,
            content: captured.into_output(),
        })
    }
}

/// A name pbxsync may create or remove in its folder: one path component, not
/// hidden (its manifest and temporary files are), no control characters.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// A minijinja error as ours: the template file, the line, and that line's
/// text so the user sees what it refers to (a strict-undefined error does not
/// name the variable itself).
fn template_error(path: &Path, e: &minijinja::Error) -> ProvisionError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let line = e.line();
    if let (Some(n), Some(source)) = (line, e.template_source())
        && let Some(text) = source.lines().nth(n.saturating_sub(1))
    {
        let _ = write!(message, " in `{}`", text.trim());
    }
    ProvisionError::Template {
        template: path.to_path_buf(),
        line,
        message,
    }
}
