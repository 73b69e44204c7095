//! The policy types the rules need: how the CSV is read, the password and
//! extension rules, the hash parameters, the safety limits. They are plain values
//! (core); reading them from `pbxsync.yaml` is `config`'s job, which re-exports
//! them.

use crate::model::ExtensionKind;
use serde::Deserialize;

pub const DEFAULT_EXTENSION_PATTERN: &str = "^[0-9]{2,8}$";

/// How the CSV bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    /// UTF-8; a file that is not valid UTF-8 is read as Windows-1252, with a warning.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
}

/// The field separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delimiter {
    /// `;` when the first record has more semicolons than commas outside quotes.
    #[default]
    Auto,
    Char(u8),
}

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a visitor rather than a `String` first, so that serde_yaml puts
        // the line of the value (not of the whole document) on a refusal.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Delimiter;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of `auto`, `,`, `;`, `\\t`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Delimiter, E> {
                match s {
                    "auto" => Ok(Delimiter::Auto),
                    "," | ";" => Ok(Delimiter::Char(s.as_bytes()[0])),
                    // `'\t'` as the README writes it: YAML's single quotes keep the
                    // backslash, so this is the two characters `\` and `t`; `"\t"`
                    // is a real tab. Both, and the word, mean a tab.
                    "\t" | "\\t" | "tab" => Ok(Delimiter::Char(b'\t')),
                    other => Err(E::custom(format!(
                        "unknown delimiter `{}`, expected one of `auto`, `,`, `;`, `\\t` (or `tab`)",
                        other.escape_debug()
                    ))),
                }
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub min_upper: usize,
    pub min_digits: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 8,
            min_upper: 1,
            min_digits: 2,
        }
    }
}

/// argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl HashParams {
    /// The most memory one hash may use: 4 GiB (RFC 9106's first choice is 2 GiB).
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// The most passes over that memory. OWASP's settings use up to 5.
    pub const MAX_T_COST: u32 = 256;
    /// The most lanes. RFC 9106 uses 4; argon2 here fills them one after another,
    /// so more lanes only cost memory.
    pub const MAX_P_COST: u32 = 64;
    /// The most memory a hash may pass over in all (m_cost_kib × t_cost, in KiB):
    /// 4 GiB, a few seconds for one password (the phone system's login pays it
    /// too). Without it, a typo (`t_cost: 4294967295`) makes an apply hash for
    /// ever.
    pub const MAX_WORK_KIB: u64 = 4 * 1024 * 1024;

    /// Checks each parameter against argon2's lower bounds and pbxsync's upper
    /// ones. The error is the key at fault (`t_cost`) and a message naming it and
    /// its bounds.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let key = "policy.password_hash";
        if !(1..=Self::MAX_P_COST).contains(&self.p_cost) {
            return Err((
                "p_cost",
                format!(
                    "`{key}.p_cost` is {}; it must be from 1 to {}",
                    self.p_cost,
                    Self::MAX_P_COST
                ),
            ));
        }
        if !(1..=Self::MAX_T_COST).contains(&self.t_cost) {
            return Err((
                "t_cost",
                format!(
                    "`{key}.t_cost` is {}; it must be from 1 to {}",
                    self.t_cost,
                    Self::MAX_T_COST
                ),
            ));
        }
        let min_m = 8 * self.p_cost;
        if !(min_m..=Self::MAX_M_COST_KIB).contains(&self.m_cost_kib) {
            return Err((
                "m_cost_kib",
                format!(
                    "`{key}.m_cost_kib` is {}; it must be from 8 × p_cost ({min_m}) to {} (4 GiB)",
                    self.m_cost_kib,
                    Self::MAX_M_COST_KIB
                ),
            ));
        }
        let work = u64::from(self.m_cost_kib) * u64::from(self.t_cost);
        if work > Self::MAX_WORK_KIB {
            return Err((
                "t_cost",
                format!(
                    "`{key}.t_cost` is {} with m_cost_kib {}: m_cost_kib × t_cost is {work}, and at most {} (4 GiB of memory passes) keeps one password to seconds; lower one of them",
                    self.t_cost,
                    self.m_cost_kib,
                    Self::MAX_WORK_KIB
                ),
            ));
        }
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map(|_| ())
            .map_err(|e| {
                (
                    "password_hash",
                    format!("`{key}` is not a valid argon2id setting: {e}"),
                )
            })
    }
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            m_cost_kib: 19456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReassignedBecomes {
    #[default]
    Virtual,
    VoicemailOnly,
}

impl ReassignedBecomes {
    pub fn kind(self) -> ExtensionKind {
        match self {
            ReassignedBecomes::Virtual => ExtensionKind::Virtual,
            ReassignedBecomes::VoicemailOnly => ExtensionKind::VoicemailOnly,
        }
    }
}

/// What a Password cell that holds the password itself (not its argon2id hash)
/// is: a repository need never hold one (SPEC section 3, rule 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaintextPasswords {
    Allow,
    /// A `plaintext-password` warning.
    #[default]
    Warn,
    /// A `plaintext-password` error.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub password: PasswordPolicy,
    pub password_hash: HashParams,
    pub plaintext_passwords: PlaintextPasswords,
    pub extension_pattern: String,
    pub allow_apostrophes: bool,
    pub reassigned_extension_becomes: ReassignedBecomes,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            password: PasswordPolicy::default(),
            password_hash: HashParams::default(),
            plaintext_passwords: PlaintextPasswords::default(),
            extension_pattern: DEFAULT_EXTENSION_PATTERN.to_string(),
            allow_apostrophes: false,
            reassigned_extension_becomes: ReassignedBecomes::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    pub max_change_percent: u32,
    pub min_existing: u64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_change_percent: 30,
            min_existing: 10,
        }
    }
}

/// Flags that change the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SyncOptions {
    pub prune: bool,
    pub reset_passwords: bool,
    pub allow_empty: bool,
    pub allow_large_change: bool,
}
