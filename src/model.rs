//! The PBX's own nouns: columns of the CSV, extensions, users, devices, and the
//! directory that holds them. Plain values, no I/O.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A short piece of text. Most CSV cells fit inline (24 bytes), so a directory of a
/// million users does not pay for a million heap allocations per field.
pub type Text = CompactString;

/// The ten columns of the users/extensions CSV, in their default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    Extension,
    FirstName,
    LastName,
    WebUsername,
    Password,
    Description,
    Email,
    Im,
    Mobile,
    Device,
}

impl Column {
    pub const ALL: [Column; 10] = [
        Column::Extension,
        Column::FirstName,
        Column::LastName,
        Column::WebUsername,
        Column::Password,
        Column::Description,
        Column::Email,
        Column::Im,
        Column::Mobile,
        Column::Device,
    ];

    /// The canonical header cell, as `fmt` and `export` write it.
    pub fn header(self) -> &'static str {
        match self {
            Column::Extension => "Extension",
            Column::FirstName => "First Name",
            Column::LastName => "Last Name",
            Column::WebUsername => "Web Username",
            Column::Password => "Password",
            Column::Description => "Description",
            Column::Email => "Email",
            Column::Im => "IM",
            Column::Mobile => "Mobile",
            Column::Device => "Device MAC Address",
        }
    }

    /// The field name used in plans and JSON (`changes[].field`).
    pub fn field(self) -> &'static str {
        match self {
            Column::Extension => "extension",
            Column::FirstName => "first_name",
            Column::LastName => "last_name",
            Column::WebUsername => "username",
            Column::Password => "password",
            Column::Description => "description",
            Column::Email => "email",
            Column::Im => "im",
            Column::Mobile => "mobile",
            Column::Device => "device",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn required(self) -> bool {
        matches!(
            self,
            Column::Extension | Column::FirstName | Column::LastName | Column::WebUsername
        )
    }

    /// Recognises a header cell. Case, spaces, `_` and `-` are ignored, and the
    /// usual synonyms of spreadsheets and PBX exports are accepted.
    pub fn from_header(cell: &str) -> Option<Column> {
        let key: String = cell
            .trim()
            .trim_start_matches('\u{feff}')
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-' | '.'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match key.as_str() {
            "extension" | "ext" | "extensionnumber" | "number" => Column::Extension,
            "firstname" | "first" | "givenname" => Column::FirstName,
            "lastname" | "last" | "surname" | "familyname" => Column::LastName,
            "webusername" | "username" | "user" | "login" => Column::WebUsername,
            "password" | "webpassword" => Column::Password,
            "description" | "desc" => Column::Description,
            "email" | "emailaddress" | "mail" => Column::Email,
            "im" | "instantmessaging" => Column::Im,
            "mobile" | "mobilephone" | "cell" | "mobilenumber" => Column::Mobile,
            "devicemacaddress" | "macaddress" | "mac" | "device" | "deviceid" => Column::Device,
            _ => return None,
        })
    }
}

/// A set of columns (the columns a file manages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ColumnSet(u16);

impl ColumnSet {
    pub const ALL: ColumnSet = ColumnSet((1 << 10) - 1);

    pub fn insert(&mut self, c: Column) {
        self.0 |= 1 << c.index();
    }
    pub fn contains(self, c: Column) -> bool {
        self.0 & (1 << c.index()) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Column> {
        Column::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

/// How an extension reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionKind {
    /// Assigned to a device from the inventory.
    Device,
    /// Reserved for a future phone; uses a user license.
    Virtual,
    /// No device at all; uses a voicemail license.
    VoicemailOnly,
}

impl ExtensionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionKind::Device => "device",
            ExtensionKind::Virtual => "virtual",
            ExtensionKind::VoicemailOnly => "voicemail_only",
        }
    }

    pub fn parse(s: &str) -> Option<ExtensionKind> {
        match s {
            "device" => Some(ExtensionKind::Device),
            "virtual" => Some(ExtensionKind::Virtual),
            "voicemail_only" => Some(ExtensionKind::VoicemailOnly),
            _ => None,
        }
    }

    /// Which license an extension of this kind consumes.
    pub fn uses_voicemail_license(self) -> bool {
        self == ExtensionKind::VoicemailOnly
    }
}

impl std::fmt::Display for ExtensionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the Device MAC Address cell asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceCell {
    /// Empty: a new extension is `voicemail_only`, an existing one keeps its device.
    Keep,
    /// The keyword `virtual`.
    Virtual,
    /// A device id in canonical form (a MAC as 12 upper-case hex digits, or a
    /// soft-phone id in upper case).
    Device(Text),
}

/// The user fields that rows of one user share.
pub const USER_COLUMNS: [Column; 5] = [
    Column::FirstName,
    Column::LastName,
    Column::Email,
    Column::Im,
    Column::Mobile,
];

/// A password or other secret. It never prints: `Debug` shows `(sensitive)`, and it
/// has no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Text);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(Text::from(s))
    }
    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(sensitive)")
    }
}

/// An extension that a device holds, as the phone system sees it: what the
/// device's provisioning file and the SIP registrar need. `pbxsync secret` and
/// the provisioning files are the only places its secret goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    pub extension: Text,
    /// The user's first and last name, as one.
    pub display_name: Text,
    /// The device's id (a MAC in the canonical form: 12 upper-case hex digits).
    pub device: Text,
    /// The device's model in the inventory ("" when it has none).
    pub model: Text,
    /// The extension's SIP secret, which is also its password at the registrar.
    pub sip_secret: Secret,
}

/// A user as the CSV wants it (merged over all rows of the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUser {
    pub username: Text,
    /// first name, last name, email, IM, mobile (index by `USER_COLUMNS`); empty
    /// when no row fills it in.
    pub fields: [Text; 5],
    /// The first non-empty Password cell of the user's rows.
    pub password: Option<Secret>,
    /// The first row of the user.
    pub line: u32,
}

impl DesiredUser {
    pub fn field(&self, c: Column) -> &str {
        user_field(&self.fields, c)
    }
}

/// The value of user column `c` in `fields` (indexed by `USER_COLUMNS`); "" for a
/// column that is not a user field.
fn user_field(fields: &[Text; 5], c: Column) -> &str {
    match USER_COLUMNS.iter().position(|u| *u == c) {
        Some(i) => &fields[i],
        None => "",
    }
}

/// One row of the CSV: an extension as the CSV wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredExtension {
    pub number: Text,
    pub username: Text,
    pub description: Text,
    pub device: DeviceCell,
    /// The line where the row's record starts.
    pub line: u32,
}

/// The desired state: what the CSV asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// The columns the file manages; the others are kept as they are in the target.
    pub managed: ColumnSet,
    /// Sorted by username.
    pub users: Vec<DesiredUser>,
    /// Sorted by extension number.
    pub extensions: Vec<DesiredExtension>,
}

impl Desired {
    pub fn user(&self, username: &str) -> Option<&DesiredUser> {
        self.users
            .binary_search_by(|u| u.username.as_str().cmp(username))
            .ok()
            .map(|i| &self.users[i])
    }
    pub fn extension(&self, number: &str) -> Option<&DesiredExtension> {
        self.extensions
            .binary_search_by(|e| cmp_extension(&e.number, number))
            .ok()
            .map(|i| &self.extensions[i])
    }
}

/// The digest of what one CSV row asks for (the password aside): a target that
/// stores it for the row it last applied can tell an unchanged row by comparing
/// eight bytes. Each field is hashed apart and the hashes combined by position.
pub fn row_digest(
    number: &str,
    username: &str,
    user: [&str; 5],
    description: &str,
    device: &DeviceCell,
) -> u64 {
    let hash = |s: &str| xxhash_rust::xxh3::xxh3_64(s.as_bytes());
    row_digest_of_hashes(
        hash(number),
        hash(username),
        user.map(hash),
        hash(description),
        hash(device_cell_text(device)),
    )
}

/// What a row's digest takes of its Device cell.
pub fn device_cell_text(device: &DeviceCell) -> &str {
    match device {
        DeviceCell::Keep => "",
        DeviceCell::Virtual => "virtual",
        DeviceCell::Device(id) => id,
    }
}

/// `row_digest` from the xxh3 hashes of its fields: a reader that hashes the
/// fields for its own checks hashes each once.
pub fn row_digest_of_hashes(
    number: u64,
    username: u64,
    user: [u64; 5],
    description: u64,
    device: u64,
) -> u64 {
    [number, username]
        .into_iter()
        .chain(user)
        .chain([description, device])
        .fold(0x5042_5853u64, |h, f| {
            h.rotate_left(23) ^ f.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
}

/// A merge join's cursor over a sorted list: looking up keys that come in the same
/// order costs one pass over the list, not one search per key.
pub struct SortedCursor<'a, T> {
    items: &'a [T],
    at: usize,
}

impl<'a, T> SortedCursor<'a, T> {
    pub fn new(items: &'a [T]) -> SortedCursor<'a, T> {
        SortedCursor { items, at: 0 }
    }

    /// The item equal to the key, where `cmp` orders an item against the key.
    /// Keys must be asked for in ascending order.
    pub fn find(&mut self, cmp: impl Fn(&T) -> std::cmp::Ordering) -> Option<&'a T> {
        // One comparison per item: the item found is not compared again.
        while let Some(item) = self.items.get(self.at) {
            match cmp(item) {
                std::cmp::Ordering::Less => self.at += 1,
                std::cmp::Ordering::Equal => return Some(item),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Extensions sort numerically where they are numbers (so `99` comes before `100`),
/// and by text otherwise; equal numbers with different leading zeros stay distinct.
pub fn cmp_extension(a: &str, b: &str) -> std::cmp::Ordering {
    // Equal text is the usual case when sorted lists are merged (the rows of a
    // file against the target's), and is equal whatever the rules below say.
    if a == b {
        return std::cmp::Ordering::Equal;
    }
    // Of equal length and without leading zeros, numbers and text alike order as
    // their bytes (the rules below agree): the usual case, decided at once.
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() == y.len() && x.first() > Some(&b'0') && y.first() > Some(&b'0') {
        return x.cmp(y);
    }
    let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    let numeric = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if numeric(a) && numeric(b) {
        ta.len()
            .cmp(&tb.len())
            .then_with(|| ta.cmp(tb))
            .then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

/// A user in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: Text,
    /// first name, last name, email, IM, mobile (index by `USER_COLUMNS`).
    pub fields: [Text; 5],
}

impl User {
    /// The value of user column `c` ("" for a column that is not a user field).
    pub fn field(&self, c: Column) -> &str {
        user_field(&self.fields, c)
    }
}

/// An extension in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub number: Text,
    pub username: Text,
    pub kind: ExtensionKind,
    /// Set exactly when `kind` is `Device`.
    pub device: Option<Text>,
    pub description: Text,
}

/// A device of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: Text,
    pub model: Text,
}

/// License limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Licenses {
    pub users: Option<u64>,
    pub voicemail: Option<u64>,
}

/// Extension counts, for the license and safety checks of a plan that does not read
/// the whole directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub extensions: u64,
    /// `device` and `virtual` extensions.
    pub user_licenses: u64,
    /// `voicemail_only` extensions.
    pub voicemail_licenses: u64,
}

impl Usage {
    pub fn of(dir: &Directory) -> Usage {
        let voicemail = dir
            .extensions
            .iter()
            .filter(|e| e.kind.uses_voicemail_license())
            .count() as u64;
        Usage {
            extensions: dir.extensions.len() as u64,
            user_licenses: dir.extensions.len() as u64 - voicemail,
            voicemail_licenses: voicemail,
        }
    }
}

/// The current state of a target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directory {
    /// Sorted by username.
    pub users: Vec<User>,
    /// Sorted by `cmp_extension`.
    pub extensions: Vec<Extension>,
    /// Sorted by id.
    pub devices: Vec<Device>,
    pub licenses: Licenses,
}

impl Directory {
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users
            .binary_search_by(|u| u.username.as_str().cmp(username))
            .ok()
            .map(|i| &self.users[i])
    }
    pub fn extension(&self, number: &str) -> Option<&Extension> {
        self.extensions
            .binary_search_by(|e| cmp_extension(&e.number, number))
            .ok()
            .map(|i| &self.extensions[i])
    }
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// Puts every list in its canonical order.
    pub fn sort(&mut self) {
        self.users.sort_by(|a, b| a.username.cmp(&b.username));
        self.extensions
            .sort_by(|a, b| cmp_extension(&a.number, &b.number));
        self.devices.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

#[cfg(test)]
mod tests {
    /// `cmp_extension` as first written, without its shortcut for equal lengths.
    fn cmp_extension_reference(a: &str, b: &str) -> std::cmp::Ordering {
        let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        let numeric = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
        if numeric(a) && numeric(b) {
            ta.len()
                .cmp(&tb.len())
                .then_with(|| ta.cmp(tb))
                .then_with(|| a.cmp(b))
        } else {
            a.cmp(b)
        }
    }

    proptest::proptest! {
        #[test]
        fn extension_order_agrees_with_its_definition(a in "[019a#]{0,4}", b in "[019a#]{0,4}") {
            proptest::prop_assert_eq!(cmp_extension(&a, &b), cmp_extension_reference(&a, &b));
        }
    }

    use super::*;

    #[test]
    fn header_cells_are_recognised_loosely() {
        assert_eq!(
            Column::from_header("Device MAC Address"),
            Some(Column::Device)
        );
        assert_eq!(Column::from_header("mac"), Some(Column::Device));
        assert_eq!(
            Column::from_header("web_username"),
            Some(Column::WebUsername)
        );
        assert_eq!(Column::from_header(" FIRST-NAME "), Some(Column::FirstName));
        assert_eq!(Column::from_header("1001"), None);
        assert_eq!(Column::from_header("Jason"), None);
    }

    #[test]
    fn extensions_sort_numerically() {
        let mut v = vec!["100", "99", "1000", "0100", "20"];
        v.sort_by(|a, b| cmp_extension(a, b));
        assert_eq!(v, ["20", "99", "0100", "100", "1000"]);
    }
}
