//! A model-based test of the package's life: a seeded random walk of installs, upgrades,
//! reconfigurations, hand edits, removals and purges, run with the built binary in a
//! sandbox (real postconf, doveconf, openssl and debconf). After every step, what
//! `postconf -n`, `-M` and `-P` show is compared with a model that derives the managed
//! settings from the answers and from the rules in the README section "What happens on
//! upgrade, reconfigure, remove and purge". The model is written here from the README,
//! without the product's rendering or planning code, so that it can catch their mistakes.
//!
//! Each test walks POSTFIX_SUBMISSION_MODEL_STEPS steps (default 50) from the seed
//! POSTFIX_SUBMISSION_MODEL_SEED (decimal or 0x-prefixed hex; default: a fixed seed per
//! test). A failure prints the seed, the steps so far, the differences between the model
//! and postconf, and the command that replays the walk.
//!
//! NOTE: the walk does not cover Let's Encrypt certificates, `configure_dovecot = false`,
//! entries deleted by hand, interrupted runs or the `ssmtp` and `587` entry names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use common::{tools_present, Fingerprint, Sandbox};

const STEPS_VARIABLE: &str = "POSTFIX_SUBMISSION_MODEL_STEPS";
const SEED_VARIABLE: &str = "POSTFIX_SUBMISSION_MODEL_SEED";
const DEFAULT_STEPS: usize = 50;

const SERVICES: [&str; 2] = ["submission", "submissions"];

/// Returns the other master.cf service names of a service's port: the port number, and the
/// older name `smtps` for 465. The README states that the package reuses an active entry
/// under any of them.
fn port_aliases(service: &str) -> &'static [&'static str] {
    match service {
        "submission" => &["587"],
        _ => &["smtps", "465"],
    }
}

/// Returns the `service/inet` keys that listen on the port of `service`, its own name first.
fn port_keys(service: &str) -> Vec<String> {
    std::iter::once(service)
        .chain(port_aliases(service).iter().copied())
        .map(|name| format!("{name}/inet"))
        .collect()
}

/// The main.cf parameter that the package never manages, edited by hand to check that
/// such edits survive every step.
const UNRELATED_PARAMETER: &str = "message_size_limit";

/// Main.cf parameters whose values are lists, compared by their items as Postfix reads
/// them (separated by commas or whitespace, `{...}` kept whole).
const LIST_PARAMETERS: [&str; 10] = [
    "smtpd_relay_restrictions",
    "smtpd_sender_login_maps",
    "mua_client_restrictions",
    "mua_helo_restrictions",
    "mua_sender_restrictions",
    "mua_relay_restrictions",
    "mua_recipient_restrictions",
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
];

/// Port-25 restrictions for `client_checks = standard`: none that depend on the client's
/// DNS being right.
const STANDARD_RESTRICTIONS: [(&str, &str); 3] = [
    (
        "smtpd_client_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_pipelining",
    ),
    (
        "smtpd_helo_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_invalid_helo_hostname, \
         reject_non_fqdn_helo_hostname",
    ),
    (
        "smtpd_sender_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_unknown_sender_domain",
    ),
];

/// Port-25 restrictions for `client_checks = strict`: the standard ones plus the
/// `reject_unknown_*_hostname` DNS checks.
const STRICT_RESTRICTIONS: [(&str, &str); 3] = [
    (
        "smtpd_client_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_pipelining, \
         reject_unknown_client_hostname",
    ),
    (
        "smtpd_helo_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_invalid_helo_hostname, \
         reject_non_fqdn_helo_hostname, reject_unknown_helo_hostname",
    ),
    (
        "smtpd_sender_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_unknown_sender_domain, \
         reject_unknown_reverse_client_hostname, reject_unknown_client_hostname",
    ),
];

/// Valid hand-edit values for the managed main.cf parameters. The certificate, the key
/// and the sender login maps are edited with the sandbox's own files instead.
const PARAMETER_EDITS: [(&str, &[&str]); 15] = [
    ("smtpd_sasl_type", &["dovecot", "cyrus"]),
    ("smtpd_sasl_path", &["private/auth", "private/auth-client"]),
    ("smtpd_sasl_auth_enable", &["yes", "no"]),
    ("smtpd_tls_security_level", &["may", "encrypt"]),
    ("smtpd_tls_auth_only", &["yes", "no"]),
    (
        "smtp_tls_security_level",
        &["may", "encrypt", "dane", "none"],
    ),
    (
        "smtpd_relay_restrictions",
        &[
            "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
            "permit_mynetworks, reject_unauth_destination",
            "permit_mynetworks, permit_sasl_authenticated, \
             check_policy_service unix:private/policy, reject_unauth_destination",
        ],
    ),
    (
        "mua_client_restrictions",
        &[
            "permit_sasl_authenticated, reject",
            "permit_mynetworks, permit_sasl_authenticated, reject",
        ],
    ),
    (
        "mua_helo_restrictions",
        &[
            "permit_sasl_authenticated, reject",
            "permit_sasl_authenticated, reject_invalid_helo_hostname, reject",
        ],
    ),
    (
        "mua_sender_restrictions",
        &[
            "permit_sasl_authenticated, reject",
            "reject_sender_login_mismatch, permit_sasl_authenticated, reject",
            "reject_non_fqdn_sender, permit_sasl_authenticated, reject",
        ],
    ),
    (
        "mua_relay_restrictions",
        &[
            "permit_sasl_authenticated, reject",
            "permit_mynetworks, permit_sasl_authenticated, reject",
        ],
    ),
    (
        "mua_recipient_restrictions",
        &[
            "permit_sasl_authenticated, reject",
            "reject_non_fqdn_recipient, permit_sasl_authenticated, reject",
        ],
    ),
    (
        "smtpd_client_restrictions",
        &[
            "permit_mynetworks, permit_sasl_authenticated, reject_unauth_pipelining",
            "permit_mynetworks, reject_unauth_pipelining",
        ],
    ),
    (
        "smtpd_helo_restrictions",
        &[
            "permit_mynetworks, permit_sasl_authenticated, reject_invalid_helo_hostname",
            "permit_mynetworks, reject_non_fqdn_helo_hostname",
        ],
    ),
    (
        "smtpd_sender_restrictions",
        &[
            "permit_mynetworks, permit_sasl_authenticated, reject_unknown_sender_domain",
            "permit_mynetworks, reject_non_fqdn_sender",
        ],
    ),
];

/// Valid hand-edit values for `-o` options of the submission entries: the package's own
/// options, and smtpd_milters, which only an admin adds.
const OPTION_EDITS: [(&str, &[&str]); 9] = [
    (
        "syslog_name",
        &[
            "postfix/submission",
            "postfix/submissions",
            "postfix/$service_name",
        ],
    ),
    ("smtpd_tls_security_level", &["encrypt", "may"]),
    ("smtpd_tls_wrappermode", &["yes", "no"]),
    ("smtpd_sasl_auth_enable", &["yes", "no"]),
    ("smtpd_tls_auth_only", &["yes", "no"]),
    ("smtpd_reject_unlisted_recipient", &["yes", "no"]),
    ("milter_macro_daemon_name", &["ORIGINATING", "SUBMISSION"]),
    (
        "smtpd_client_restrictions",
        &[
            "$mua_client_restrictions",
            "permit_sasl_authenticated,reject",
        ],
    ),
    (
        "smtpd_milters",
        &["inet:127.0.0.1:11332", "inet:127.0.0.1:11333"],
    ),
];

/// A splitmix64 generator: a few lines, deterministic, and good enough to pick steps.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number below `n`, which must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Splits a Postfix list value into its items: separated by commas or whitespace, with
/// `{...}` groups kept whole.
fn list_items(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in value.char_indices() {
        if depth == 0 && (c == ',' || c.is_whitespace()) {
            if let Some(s) = start.take() {
                items.push(&value[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
        if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
        }
    }
    if let Some(s) = start {
        items.push(&value[s..]);
    }
    items
}

/// Tells whether two values of a setting are the same as Postfix reads them. `None`
/// means unset.
fn same_value(list: bool, a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if list => list_items(a) == list_items(b),
        (Some(a), Some(b)) => a.trim() == b.trim(),
        (None, None) => true,
        _ => false,
    }
}

fn is_list(name: &str) -> bool {
    LIST_PARAMETERS.contains(&name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientChecks {
    Strict,
    Standard,
    Unchanged,
}

impl ClientChecks {
    const ALL: [ClientChecks; 3] = [
        ClientChecks::Strict,
        ClientChecks::Standard,
        ClientChecks::Unchanged,
    ];

    fn name(self) -> &'static str {
        match self {
            ClientChecks::Strict => "strict",
            ClientChecks::Standard => "standard",
            ClientChecks::Unchanged => "unchanged",
        }
    }

    /// Returns the port-25 restrictions that the choice sets, none for `unchanged`.
    fn restrictions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ClientChecks::Strict => &STRICT_RESTRICTIONS,
            ClientChecks::Standard => &STANDARD_RESTRICTIONS,
            ClientChecks::Unchanged => &[],
        }
    }
}

/// The debconf answers. `configure_dovecot` is always true in this test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answers {
    services: BTreeSet<&'static str>,
    /// Empty means automatic.
    tls_cert_file: String,
    /// Empty means automatic.
    tls_key_file: String,
    sender_login_maps: String,
    auth_on_port_25: bool,
    client_checks: ClientChecks,
}

impl Default for Answers {
    /// Returns the defaults in debian/templates, which a purge brings back.
    fn default() -> Answers {
        Answers {
            services: BTreeSet::from(SERVICES),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            sender_login_maps: String::new(),
            auth_on_port_25: false,
            client_checks: ClientChecks::Standard,
        }
    }
}

impl Answers {
    fn services_text(&self) -> String {
        self.services.iter().copied().collect::<Vec<_>>().join(", ")
    }

    /// Returns the answers as preseed entries: name, type and value.
    fn preseed(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            ("services", "multiselect", self.services_text()),
            ("tls_cert_file", "string", self.tls_cert_file.clone()),
            ("tls_key_file", "string", self.tls_key_file.clone()),
            (
                "sender_login_maps",
                "string",
                self.sender_login_maps.clone(),
            ),
            (
                "auth_on_port_25",
                "boolean",
                self.auth_on_port_25.to_string(),
            ),
            ("client_checks", "select", self.client_checks.name().into()),
            ("configure_dovecot", "boolean", "true".into()),
        ]
    }
}

impl fmt::Display for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_automatic = |value: &str| {
            if value.is_empty() {
                "(automatic)".to_string()
            } else {
                value.to_string()
            }
        };
        write!(
            f,
            "services=[{}] cert={} key={} sender_login_maps=[{}] auth_on_port_25={} \
             client_checks={}",
            self.services_text(),
            or_automatic(&self.tls_cert_file),
            or_automatic(&self.tls_key_file),
            self.sender_login_maps,
            self.auth_on_port_25,
            self.client_checks.name()
        )
    }
}

/// The two template sets that upgrades and downgrades alternate between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateSet {
    /// templates/ as the repository has it.
    Shipped,
    /// A copy with smtpd_relay_restrictions and the smtpd_reject_unlisted_recipient
    /// option changed.
    Changed,
}

impl TemplateSet {
    fn other(self) -> TemplateSet {
        match self {
            TemplateSet::Shipped => TemplateSet::Changed,
            TemplateSet::Changed => TemplateSet::Shipped,
        }
    }

    fn relay_restrictions(self) -> &'static str {
        match self {
            TemplateSet::Shipped => {
                "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
            }
            TemplateSet::Changed => {
                "permit_mynetworks permit_sasl_authenticated reject_unauth_destination"
            }
        }
    }

    fn reject_unlisted_recipient(self) -> &'static str {
        match self {
            TemplateSet::Shipped => "no",
            TemplateSet::Changed => "yes",
        }
    }
}

/// Main.cf and master.cf as postconf reads them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Config {
    /// Main.cf parameters that are set explicitly, including those that `postconf -n`
    /// leaves out because nothing uses them (such as `mua_*` lists that no master.cf
    /// option refers to), which it names in "unused parameter" warnings instead.
    parameters: BTreeMap<String, String>,
    /// Master.cf entries by `service/type`.
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// The first eight fields, one space between them.
    fields: String,
    /// The `-o` options by name.
    options: BTreeMap<String, String>,
}

impl Config {
    /// Tells whether two configurations have the same values as Postfix reads them.
    fn same_as(&self, other: &Config) -> bool {
        differences(self, other).is_empty()
    }
}

/// The settings that the answers call for, by the model.
#[derive(Debug, Clone, Default)]
struct Desired {
    parameters: BTreeMap<String, String>,
    /// The options of each desired entry, by `service/inet`.
    entries: BTreeMap<String, BTreeMap<String, String>>,
}

/// Returns the `-o` options the package sets on the entry of `service`.
fn service_options(
    service: &str,
    templates: TemplateSet,
    postfix_3_10: bool,
) -> BTreeMap<String, String> {
    let tls = if service == "submission" {
        ("smtpd_tls_security_level", "encrypt")
    } else {
        ("smtpd_tls_wrappermode", "yes")
    };
    let syslog_name = format!("postfix/{service}");
    let mut options = vec![
        ("syslog_name", syslog_name.as_str()),
        tls,
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_auth_only", "yes"),
        (
            "smtpd_reject_unlisted_recipient",
            templates.reject_unlisted_recipient(),
        ),
        ("smtpd_client_restrictions", "$mua_client_restrictions"),
        ("smtpd_helo_restrictions", "$mua_helo_restrictions"),
        ("smtpd_sender_restrictions", "$mua_sender_restrictions"),
        ("smtpd_relay_restrictions", "$mua_relay_restrictions"),
        (
            "smtpd_recipient_restrictions",
            "$mua_recipient_restrictions",
        ),
        ("milter_macro_daemon_name", "ORIGINATING"),
    ];
    if postfix_3_10 {
        options.extend([
            ("smtpd_forbid_unauth_pipelining", "no"),
            ("local_header_rewrite_clients", "static:all"),
            ("smtpd_hide_client_session", "yes"),
        ]);
    }
    options
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The record entry of one setting the package manages.
#[derive(Debug, Clone)]
struct Written {
    /// The value before the package took the setting over, or `None` when it was unset.
    original: Option<String>,
    /// The value the package last asked for.
    applied: String,
    /// True when the value in place is one the package wrote. A value it found in place
    /// or took over from a hand edit is the admin's, and removal leaves it.
    by_package: bool,
}

/// The model of the package's record.
#[derive(Debug, Clone, Default)]
struct Record {
    /// The answers of the last apply, after hand edits were adopted.
    answers: Option<Answers>,
    parameters: BTreeMap<String, Written>,
    /// Whether the package created each managed entry, by `service/type`.
    entries: BTreeMap<String, bool>,
    /// Options by `service/type` and option name.
    options: BTreeMap<(String, String), Written>,
}

/// The comparison rules of one setting.
#[derive(Debug, Clone, Copy)]
struct Kind<'a> {
    /// The main.cf parameter name, or `None` for a master.cf option.
    parameter: Option<&'a str>,
    /// The value Postfix uses when the setting is unset (`postconf -d`).
    default: Option<&'a str>,
}

impl Kind<'_> {
    fn option() -> Kind<'static> {
        Kind {
            parameter: None,
            default: None,
        }
    }

    /// Tells whether two values are the same as Postfix reads them, an unset value
    /// counting as the default.
    fn same(&self, a: Option<&str>, b: Option<&str>) -> bool {
        let list = self.parameter.is_some_and(is_list);
        same_value(list, a.or(self.default), b.or(self.default))
    }

    /// Tells whether `current` already satisfies `desired`: the same value, or for the TLS
    /// levels and smtpd_relay_restrictions a value that is at least as strict. The
    /// templates' comments state that such an admin's value is kept, never lowered.
    fn meets(&self, current: Option<&str>, desired: &str) -> bool {
        if self.same(current, Some(desired)) {
            return true;
        }
        let Some(current) = current.or(self.default) else {
            return false;
        };
        match self.parameter {
            Some("smtpd_tls_security_level" | "smtp_tls_security_level") => {
                tls_rank(current) >= tls_rank(desired)
            }
            Some("smtpd_relay_restrictions") => relay_is_closed(current),
            _ => false,
        }
    }
}

/// Orders TLS security levels: none, may, then the levels that require TLS.
fn tls_rank(level: &str) -> u8 {
    match level.trim() {
        "" | "none" => 0,
        "may" => 1,
        _ => 2,
    }
}

/// Tells whether relay restrictions permit logged-in users and refuse other destinations
/// without an unconditional `permit` before the refusal: no open relay, and no logged-in
/// user turned away.
fn relay_is_closed(value: &str) -> bool {
    let items = list_items(value);
    let refusal = items.iter().position(|item| {
        matches!(
            *item,
            "reject_unauth_destination" | "defer_unauth_destination"
        )
    });
    refusal.is_some_and(|end| {
        let before = &items[..end];
        before.contains(&"permit_sasl_authenticated") && !before.contains(&"permit")
    })
}

/// One setting after an apply or a remove.
struct Settled {
    value: Option<String>,
    written: Option<Written>,
    /// True when a hand edit was kept although the package would set something else.
    kept_edit: bool,
}

/// Applies the README's rules to one setting. `desired` is what the answers call for now
/// (`None`: not called for, as on remove), `desired_before` what the answers of the last
/// apply call for with the same templates, and `written` the record's entry.
fn settle(
    kind: Kind,
    current: Option<&str>,
    desired: Option<&str>,
    desired_before: Option<&str>,
    written: Option<&Written>,
) -> Settled {
    let keep = |written: Option<Written>, kept_edit: bool| Settled {
        value: current.map(String::from),
        written,
        kept_edit,
    };

    let Some(written) = written else {
        // A setting the package has not managed yet: a desired one is taken over, and
        // its current value is what a later revert restores.
        let Some(desired) = desired else {
            return keep(None, false);
        };
        let write = !kind.meets(current, desired);
        return Settled {
            value: if write {
                Some(desired.to_string())
            } else {
                current.map(String::from)
            },
            written: Some(Written {
                original: current.map(String::from),
                applied: desired.to_string(),
                by_package: write,
            }),
            kept_edit: false,
        };
    };

    let edited = !kind.same(current, Some(&written.applied));
    let Some(desired) = desired else {
        // No longer called for: back to the value before the package, unless the value in
        // place is the admin's.
        if edited || !written.by_package {
            return keep(None, false);
        }
        return Settled {
            value: written.original.clone(),
            written: None,
            kept_edit: false,
        };
    };

    let list = kind.parameter.is_some_and(is_list);
    let answer_changed =
        desired_before.is_some_and(|before| !same_value(list, Some(before), Some(desired)));
    if edited && !answer_changed && !kind.meets(current, desired) {
        return keep(Some(written.clone()), true);
    }

    // The package's own value follows the templates and answers: the README states that an
    // upgrade rewrites the settings whose rendered value changed. A hand edit stays when
    // it already satisfies the new value.
    let write = if edited {
        !kind.meets(current, desired)
    } else {
        !kind.same(current, Some(desired))
    };
    let next = Written {
        original: written.original.clone(),
        applied: desired.to_string(),
        by_package: if write {
            true
        } else {
            written.by_package && !edited
        },
    };

    let value = if !write {
        current.map(String::from)
    } else if written.original.is_none() && kind.same(None, Some(desired)) {
        // Back to the default of a setting that was unset before: unset it again.
        None
    } else {
        Some(desired.to_string())
    };
    Settled {
        value,
        written: Some(next),
        kept_edit: false,
    }
}

/// Sets `name` in `values` to `value`, leaving the current text alone when it already
/// means the same, as the package writes only differences.
fn store(values: &mut BTreeMap<String, String>, name: &str, list: bool, value: Option<String>) {
    if same_value(list, values.get(name).map(String::as_str), value.as_deref()) {
        return;
    }
    match value {
        Some(value) => values.insert(name.to_string(), value),
        None => values.remove(name),
    };
}

/// Brings `config` in line with `desired` by the README's rules, and returns the new
/// record (without answers) and the hand edits kept, by name and value.
fn reconcile(
    config: &mut Config,
    defaults: &BTreeMap<String, String>,
    desired: &Desired,
    before: Option<&Desired>,
    record: &Record,
) -> (Record, Vec<(String, Option<String>)>) {
    let mut next = Record::default();
    let mut kept = Vec::new();
    let names: BTreeSet<&String> = desired
        .parameters
        .keys()
        .chain(record.parameters.keys())
        .collect();
    for name in names {
        let current = config.parameters.get(name).cloned();
        let kind = Kind {
            parameter: Some(name),
            default: defaults.get(name).map(String::as_str),
        };
        let settled = settle(
            kind,
            current.as_deref(),
            desired.parameters.get(name).map(String::as_str),
            before
                .and_then(|b| b.parameters.get(name))
                .map(String::as_str),
            record.parameters.get(name),
        );
        if settled.kept_edit {
            kept.push((name.clone(), current.clone()));
        }
        if let Some(written) = settled.written {
            next.parameters.insert(name.clone(), written);
        }
        store(&mut config.parameters, name, is_list(name), settled.value);
    }

    let chroot = config
        .entries
        .get("smtp/inet")
        .and_then(|entry| entry.fields.split_whitespace().nth(4))
        .unwrap_or("y")
        .to_string();
    let keys: BTreeSet<&String> = desired
        .entries
        .keys()
        .chain(record.entries.keys())
        .collect();
    for key in keys {
        let recorded = record.entries.get(key).copied();
        let empty = BTreeMap::new();
        let desired_options = desired.entries.get(key);
        let before_options = before.and_then(|b| b.entries.get(key)).unwrap_or(&empty);
        let Some(entry) = config.entries.get_mut(key) else {
            if let Some(options) = desired_options {
                // A missing entry is added whole, chrooted as the port-25 smtpd entry is.
                let service = key.split('/').next().unwrap();
                let fields = format!("{service} inet n - {chroot} - - smtpd");
                config.entries.insert(
                    key.clone(),
                    Entry {
                        fields,
                        options: options.clone(),
                    },
                );
                next.entries.insert(key.clone(), true);
                for (name, value) in options {
                    let written = Written {
                        original: None,
                        applied: value.clone(),
                        by_package: true,
                    };
                    next.options.insert((key.clone(), name.clone()), written);
                }
            }
            continue;
        };
        let created = recorded == Some(true);
        if desired_options.is_none() && created {
            // A deselected service's entry that the package created goes away whole.
            config.entries.remove(key);
            continue;
        }
        if desired_options.is_none() && recorded.is_none() {
            continue;
        }
        if desired_options.is_some() {
            next.entries.insert(key.clone(), created);
        }
        let desired_options = desired_options.unwrap_or(&empty);
        let mut names: BTreeSet<&String> = desired_options.keys().collect();
        names.extend(
            record
                .options
                .keys()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| n),
        );
        for name in names {
            let full = (key.clone(), name.clone());
            let current = entry.options.get(name).cloned();
            let settled = settle(
                Kind::option(),
                current.as_deref(),
                desired_options.get(name).map(String::as_str),
                before_options.get(name).map(String::as_str),
                record.options.get(&full),
            );
            if settled.kept_edit {
                kept.push((format!("{key}/{name}"), current.clone()));
            }
            if let Some(written) = settled.written {
                next.options.insert(full, written);
            }
            store(&mut entry.options, name, false, settled.value);
        }
    }
    (next, kept)
}

/// Moves each desired entry to the admin's active entry for the same port, such as
/// `smtps/inet` for `submissions/inet`, unless master.cf or the record already has the
/// entry under the service's own name.
fn place_entries(desired: &mut Desired, config: &Config, record: &Record) {
    for service in SERVICES {
        let keys = port_keys(service);
        let own = &keys[0];
        if !desired.entries.contains_key(own)
            || config.entries.contains_key(own)
            || record.entries.contains_key(own)
        {
            continue;
        }
        if let Some(alias) = keys[1..].iter().find(|k| config.entries.contains_key(*k)) {
            let options = desired.entries.remove(own).unwrap();
            desired.entries.insert(alias.clone(), options);
        }
    }
}

/// Returns the question, numbered as in `Walk::reroll`, whose answer drives a main.cf
/// parameter that is managed whatever the services are.
fn driving_question(name: &str) -> Option<usize> {
    match name {
        "smtpd_tls_cert_file" | "smtpd_tls_key_file" => Some(1),
        "smtpd_sender_login_maps" | "mua_sender_restrictions" => Some(2),
        "smtpd_sasl_auth_enable" => Some(3),
        "smtpd_client_restrictions" | "smtpd_helo_restrictions" | "smtpd_sender_restrictions" => {
            Some(4)
        }
        _ => None,
    }
}

/// Where the package is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Never installed, or purged.
    NotInstalled,
    Installed,
    /// Removed but not purged: the debconf answers remain.
    Removed,
}

/// The model: what the package is, what it recorded, and what postconf must show.
struct Model {
    lifecycle: Lifecycle,
    templates: TemplateSet,
    answers: Answers,
    record: Option<Record>,
    config: Config,
    /// Postfix's defaults (`postconf -d`), which unset parameters have.
    defaults: BTreeMap<String, String>,
    postfix_3_10: bool,
}

impl Model {
    /// Renders `answers` with the model's tables. Automatic certificate paths resolve to
    /// main.cf's current ones, because the sandbox has no Let's Encrypt certificate.
    fn desired(&self, answers: &Answers) -> Desired {
        let resolve = |answer: &str, parameter: &str| {
            if answer.is_empty() {
                self.config
                    .parameters
                    .get(parameter)
                    .cloned()
                    .unwrap_or_default()
            } else {
                answer.to_string()
            }
        };
        let auth = if answers.auth_on_port_25 { "yes" } else { "no" };
        let mut parameters: Vec<(&str, String)> = vec![
            ("smtpd_sasl_type", "dovecot".into()),
            ("smtpd_sasl_path", "private/auth".into()),
            ("smtpd_sasl_auth_enable", auth.into()),
            ("smtpd_tls_security_level", "may".into()),
            ("smtpd_tls_auth_only", "yes".into()),
            (
                "smtpd_tls_cert_file",
                resolve(&answers.tls_cert_file, "smtpd_tls_cert_file"),
            ),
            (
                "smtpd_tls_key_file",
                resolve(&answers.tls_key_file, "smtpd_tls_key_file"),
            ),
            ("smtp_tls_security_level", "may".into()),
            (
                "smtpd_relay_restrictions",
                self.templates.relay_restrictions().into(),
            ),
        ];
        let maps = !answers.sender_login_maps.is_empty();
        if maps {
            parameters.push(("smtpd_sender_login_maps", answers.sender_login_maps.clone()));
        }
        if !answers.services.is_empty() {
            let sender = if maps {
                "reject_sender_login_mismatch, permit_sasl_authenticated, reject"
            } else {
                "permit_sasl_authenticated, reject"
            };
            let mua_default = "permit_sasl_authenticated, reject";
            parameters.extend([
                ("mua_client_restrictions", mua_default.into()),
                ("mua_helo_restrictions", mua_default.into()),
                ("mua_sender_restrictions", sender.into()),
                ("mua_relay_restrictions", mua_default.into()),
                ("mua_recipient_restrictions", mua_default.into()),
            ]);
        }
        for (name, value) in answers.client_checks.restrictions() {
            parameters.push((name, value.to_string()));
        }
        Desired {
            parameters: parameters
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
            entries: answers
                .services
                .iter()
                .map(|service| {
                    let options = service_options(service, self.templates, self.postfix_3_10);
                    (format!("{service}/inet"), options)
                })
                .collect(),
        }
    }

    /// Models `postfix-submission apply` and returns the hand edits it keeps.
    fn apply(&mut self) -> Vec<(String, Option<String>)> {
        let record = self.record.take().unwrap_or_default();
        let mut desired = self.desired(&self.answers);
        place_entries(&mut desired, &self.config, &record);
        let before = record.answers.as_ref().map(|answers| {
            let mut before = self.desired(answers);
            place_entries(&mut before, &self.config, &record);
            before
        });
        let (mut next, kept) = reconcile(
            &mut self.config,
            &self.defaults,
            &desired,
            before.as_ref(),
            &record,
        );
        // A kept hand edit of a question-driven setting becomes the answer.
        for (name, value) in &kept {
            let value = value.clone().unwrap_or_default();
            match name.as_str() {
                "smtpd_tls_cert_file" => self.answers.tls_cert_file = value,
                "smtpd_tls_key_file" => self.answers.tls_key_file = value,
                "smtpd_sender_login_maps" => self.answers.sender_login_maps = value,
                "smtpd_sasl_auth_enable" => self.answers.auth_on_port_25 = value.trim() == "yes",
                _ => {}
            }
        }
        next.answers = Some(self.answers.clone());
        self.record = Some(next);
        self.lifecycle = Lifecycle::Installed;
        kept
    }

    /// Returns the recorded main.cf parameters whose value differs from the one applied.
    fn edited_parameters(&self) -> Vec<&str> {
        let Some(record) = &self.record else {
            return Vec::new();
        };
        record
            .parameters
            .iter()
            .filter(|(name, written)| {
                let kind = Kind {
                    parameter: Some(name),
                    default: self.defaults.get(*name).map(String::as_str),
                };
                let current = self.config.parameters.get(*name).map(String::as_str);
                !kind.same(current, Some(&written.applied))
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Models `postfix-submission remove`.
    fn remove(&mut self) {
        let record = self.record.take().unwrap_or_default();
        let nothing = Desired::default();
        reconcile(&mut self.config, &self.defaults, &nothing, None, &record);
        self.lifecycle = Lifecycle::Removed;
    }

    fn purge(&mut self) {
        self.answers = Answers::default();
        self.record = None;
        self.lifecycle = Lifecycle::NotInstalled;
    }
}

/// Lists, one line each, where `actual` differs from `expected`.
fn differences(expected: &Config, actual: &Config) -> Vec<String> {
    let show = |value: Option<&String>| match value {
        Some(value) => format!("{value:?}"),
        None => "(unset)".to_string(),
    };
    let mut found = Vec::new();
    let names: BTreeSet<&String> = expected
        .parameters
        .keys()
        .chain(actual.parameters.keys())
        .collect();
    for name in names {
        let model = expected.parameters.get(name);
        let real = actual.parameters.get(name);
        if !same_value(
            is_list(name),
            model.map(String::as_str),
            real.map(String::as_str),
        ) {
            found.push(format!(
                "main.cf {name}: model {}, postconf {}",
                show(model),
                show(real)
            ));
        }
    }
    let keys: BTreeSet<&String> = expected
        .entries
        .keys()
        .chain(actual.entries.keys())
        .collect();
    for key in keys {
        let (model, real) = match (expected.entries.get(key), actual.entries.get(key)) {
            (Some(model), Some(real)) => (model, real),
            (model, real) => {
                let state = |e: Option<&Entry>| if e.is_some() { "present" } else { "absent" };
                found.push(format!(
                    "master.cf entry {key}: model {}, postconf -M {}",
                    state(model),
                    state(real)
                ));
                continue;
            }
        };
        if model.fields != real.fields {
            found.push(format!(
                "master.cf entry {key} fields: model {:?}, postconf -M {:?}",
                model.fields, real.fields
            ));
        }
        let names: BTreeSet<&String> = model.options.keys().chain(real.options.keys()).collect();
        for name in names {
            let (m, r) = (model.options.get(name), real.options.get(name));
            if m != r {
                found.push(format!(
                    "master.cf option {key}/{name}: model {}, postconf -P {}",
                    show(m),
                    show(r)
                ));
            }
        }
    }
    found
}

/// Parses `name = value` lines as `postconf -n` and `postconf -P` print them.
fn parse_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(" =")?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

/// A step of the walk.
#[derive(Debug, Clone)]
enum Step {
    /// `apply` with no record: a first install or an install after purge, optionally
    /// after preseeding new answers.
    Install(Option<Answers>),
    /// `apply` with no record after a remove; the answers remain.
    Reinstall,
    /// `apply` with the other template set.
    Upgrade,
    /// New answers, then `apply`.
    Reconfigure(Answers),
    /// `postconf -e` of one or more main.cf parameters.
    EditParameters(Vec<(String, String)>),
    /// `postconf -P` of an option: `service/type`, option name and value.
    EditOption(String, String, String),
    Remove,
    /// Deleting the state directory and resetting the debconf answers.
    Purge,
}

/// The files that steps choose from, all inside the sandbox.
struct Fixtures {
    /// Matching certificate and key pairs: the sandbox's initial one, then two more.
    tls_pairs: Vec<(String, String)>,
    /// sender_login_maps answers that preflight accepts, the empty one first.
    map_answers: Vec<String>,
    /// Further existing tables, for hand edits.
    hand_maps: Vec<String>,
    shipped_templates: PathBuf,
    changed_templates: PathBuf,
}

impl Fixtures {
    fn make(sandbox: &Sandbox) -> Fixtures {
        let path = |relative: &str| sandbox.path(relative).display().to_string();
        sandbox.make_certificate("pair-a", "pair-a-key");
        sandbox.make_certificate("pair-b", "pair-b-key");
        let tls_pairs = ["cert", "pair-a", "pair-b"]
            .iter()
            .zip(["key", "pair-a-key", "pair-b-key"])
            .map(|(cert, key)| {
                (
                    path(&format!("tls/{cert}.pem")),
                    path(&format!("tls/{key}.pem")),
                )
            })
            .collect();

        fs::create_dir_all(sandbox.path("maps")).unwrap();
        for (name, content) in [
            ("sender_login", "alice@example.test alice\n"),
            ("other_login", "erin@example.test erin\n"),
        ] {
            fs::write(sandbox.path(&format!("maps/{name}")), content).unwrap();
        }
        let sender_login = format!("texthash:{}", path("maps/sender_login"));
        let map_answers = vec![
            String::new(),
            sender_login.clone(),
            "inline:{ alice@example.test=alice, bob@example.test=bob }".to_string(),
            format!("{sender_login}, inline:{{ carol@example.test=carol }}"),
        ];
        let hand_maps = vec![
            format!("texthash:{}", path("maps/other_login")),
            "inline:{ dave@example.test=dave }".to_string(),
        ];

        let shipped_templates = sandbox.copy_templates("templates-shipped");
        let changed_templates = sandbox.copy_templates("templates-changed");
        for (file, from, to) in [
            (
                "main.cf.j2",
                "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, \
                 defer_unauth_destination",
                format!(
                    "smtpd_relay_restrictions = {}",
                    TemplateSet::Changed.relay_restrictions()
                ),
            ),
            (
                "master.cf.j2",
                "-o smtpd_reject_unlisted_recipient=no",
                format!(
                    "-o smtpd_reject_unlisted_recipient={}",
                    TemplateSet::Changed.reject_unlisted_recipient()
                ),
            ),
        ] {
            let path = changed_templates.join(file);
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(from),
                "{file} no longer contains {from:?}; update the test's changed template set"
            );
            fs::write(&path, text.replace(from, &to)).unwrap();
        }
        Fixtures {
            tls_pairs,
            map_answers,
            hand_maps,
            shipped_templates,
            changed_templates,
        }
    }
}

/// The walk: the sandbox, the model, the random choices, and the history for replays.
struct Walk {
    test: &'static str,
    seed: u64,
    rng: SplitMix64,
    sandbox: Sandbox,
    fixtures: Fixtures,
    model: Model,
    /// Master.cf's comment lines before the first step, which nothing may change.
    comments: Vec<String>,
    history: Vec<String>,
    /// The stderr of the binary runs of the current step.
    output: String,
}

impl Walk {
    fn new(test: &'static str, seed: u64, sandbox: Sandbox) -> Walk {
        let fixtures = Fixtures::make(&sandbox);
        let version = sandbox.postconf(&["-h", "mail_version"]);
        let mut numbers = version
            .trim()
            .split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let release = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let mut walk = Walk {
            test,
            seed,
            rng: SplitMix64(seed),
            sandbox,
            fixtures,
            model: Model {
                lifecycle: Lifecycle::NotInstalled,
                templates: TemplateSet::Shipped,
                answers: Answers::default(),
                record: None,
                config: Config::default(),
                defaults: BTreeMap::new(),
                postfix_3_10: release >= (3, 10),
            },
            comments: Vec::new(),
            history: Vec::new(),
            output: String::new(),
        };
        walk.model.config = walk
            .read_config()
            .unwrap_or_else(|e| panic!("reading the baseline failed: {e}"));
        walk.model.defaults = parse_settings(&walk.sandbox.postconf(&["-d"]));
        walk.comments = walk.master_comments();
        walk
    }

    fn run(&mut self, steps: usize) {
        for number in 1..=steps {
            self.output.clear();
            let step = self.choose_step();
            self.history.push(self.describe(&step));
            self.perform(number, &step);
        }
        eprintln!(
            "{}: {steps} steps from seed {} passed:\n{}",
            self.test,
            self.seed,
            self.history_text()
        );
    }

    fn choose_step(&mut self) -> Step {
        let roll = self.rng.below(100);
        match self.model.lifecycle {
            Lifecycle::NotInstalled if roll < 70 => {
                let answers = self.rng.chance(50).then(|| self.random_answers());
                Step::Install(answers)
            }
            Lifecycle::NotInstalled => self.choose_edit(),
            // While a setting that a question drives is edited by hand, the next apply
            // often either changes that answer (the answer wins) or changes nothing (the
            // hand value is kept and becomes the answer).
            Lifecycle::Installed if roll < 20 => match self.answers_against_edit() {
                Some(answers) => Step::Reconfigure(answers),
                None => self.choose_step_installed(),
            },
            Lifecycle::Installed if roll < 40 && !self.edited_questions().is_empty() => {
                Step::Reconfigure(self.model.answers.clone())
            }
            Lifecycle::Installed => self.choose_step_installed(),
            Lifecycle::Removed if roll < 40 => Step::Reinstall,
            Lifecycle::Removed if roll < 70 => Step::Purge,
            Lifecycle::Removed => self.choose_edit(),
        }
    }

    fn choose_step_installed(&mut self) -> Step {
        match self.rng.below(100) {
            roll if roll < 12 => Step::Upgrade,
            roll if roll < 45 => Step::Reconfigure(self.changed_answers()),
            roll if roll < 88 => self.choose_edit(),
            _ => Step::Remove,
        }
    }

    fn random_answers(&mut self) -> Answers {
        let mut answers = Answers::default();
        for question in 0..5 {
            self.reroll(&mut answers, question);
        }
        answers
    }

    /// Returns the questions whose answers drive settings that are edited by hand.
    fn edited_questions(&self) -> Vec<usize> {
        self.model
            .edited_parameters()
            .into_iter()
            .filter_map(driving_question)
            .collect()
    }

    /// Returns new answers for the question that drives a setting edited by hand, or
    /// `None` when there is no such setting.
    fn answers_against_edit(&mut self) -> Option<Answers> {
        let questions = self.edited_questions();
        if questions.is_empty() {
            return None;
        }
        let question = *self.rng.pick(&questions);
        let mut answers = self.model.answers.clone();
        for _ in 0..8 {
            self.reroll(&mut answers, question);
            if answers != self.model.answers {
                break;
            }
        }
        Some(answers)
    }

    /// Returns new answers for a reconfigure: one re-rolled answer (which may come out
    /// the same) or all of them.
    fn changed_answers(&mut self) -> Answers {
        if self.rng.chance(50) {
            let mut answers = self.model.answers.clone();
            let question = self.rng.below(5);
            self.reroll(&mut answers, question);
            return answers;
        }
        self.random_answers()
    }

    /// Picks a new random value for one question: 0 services, 1 the certificate and key
    /// together, 2 sender login maps, 3 AUTH on port 25, 4 client checks.
    fn reroll(&mut self, answers: &mut Answers, question: usize) {
        match question {
            0 => {
                let bits = self.rng.below(4);
                answers.services = SERVICES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, s)| *s)
                    .collect();
            }
            1 => {
                // Automatic, or one of the two generated pairs.
                let choice = self.rng.below(3);
                let (cert, key) = match choice {
                    0 => (String::new(), String::new()),
                    n => self.fixtures.tls_pairs[n].clone(),
                };
                answers.tls_cert_file = cert;
                answers.tls_key_file = key;
            }
            2 => answers.sender_login_maps = self.rng.pick(&self.fixtures.map_answers).clone(),
            3 => answers.auth_on_port_25 = self.rng.chance(50),
            _ => answers.client_checks = *self.rng.pick(&ClientChecks::ALL),
        }
    }

    /// Chooses a hand edit: a managed parameter, a list reformatted with the same items,
    /// the unrelated parameter, or an option of a submission entry.
    fn choose_edit(&mut self) -> Step {
        let roll = self.rng.below(100);
        if roll < 30 {
            if let Some(step) = self.choose_option_edit() {
                return step;
            }
        }
        if roll < 40 {
            if let Some(step) = self.choose_reformat() {
                return step;
            }
        }
        if roll < 55 {
            let current = self.model.config.parameters.get(UNRELATED_PARAMETER);
            let mut value = current.cloned().unwrap_or_default();
            while Some(&value) == current {
                value = (10_240_000 + 1024 * self.rng.below(1000)).to_string();
            }
            return Step::EditParameters(vec![(UNRELATED_PARAMETER.into(), value)]);
        }
        // Choices: 0 the certificate and key, 1 sender login maps, 2 and up PARAMETER_EDITS.
        // Half the edits go to the settings whose kept edits become answers.
        let auth = PARAMETER_EDITS
            .iter()
            .position(|(name, _)| *name == "smtpd_sasl_auth_enable")
            .unwrap();
        let choice = if self.rng.chance(50) {
            *self.rng.pick(&[0, 1, auth + 2])
        } else {
            self.rng.below(PARAMETER_EDITS.len() + 2)
        };
        let parameters = &self.model.config.parameters;
        match choice {
            0 => {
                let current = (
                    parameters.get("smtpd_tls_cert_file").cloned(),
                    parameters.get("smtpd_tls_key_file").cloned(),
                );
                let others: Vec<(String, String)> = self
                    .fixtures
                    .tls_pairs
                    .iter()
                    .filter(|(c, k)| (Some(c.clone()), Some(k.clone())) != current)
                    .cloned()
                    .collect();
                let (cert, key) = self.rng.pick(&others).clone();
                Step::EditParameters(vec![
                    ("smtpd_tls_cert_file".into(), cert),
                    ("smtpd_tls_key_file".into(), key),
                ])
            }
            1 => {
                let name = "smtpd_sender_login_maps";
                let current = parameters.get(name).map(String::as_str);
                let choices: Vec<&String> = self
                    .fixtures
                    .hand_maps
                    .iter()
                    .chain(&self.fixtures.map_answers[1..])
                    .filter(|v| !same_value(true, current, Some(v)))
                    .collect();
                let value = (*self.rng.pick(&choices)).clone();
                Step::EditParameters(vec![(name.into(), value)])
            }
            n => {
                let (name, values) = PARAMETER_EDITS[n - 2];
                let current = parameters.get(name).map(String::as_str);
                let choices: Vec<&&str> = values
                    .iter()
                    .filter(|v| !same_value(is_list(name), current, Some(v)))
                    .collect();
                let value = self.rng.pick(&choices).to_string();
                Step::EditParameters(vec![(name.into(), value)])
            }
        }
    }

    /// Chooses a list parameter with two or more items and writes the same items with
    /// other separators, which is no change as Postfix reads it.
    fn choose_reformat(&mut self) -> Option<Step> {
        let candidates: Vec<(&String, &String)> = self
            .model
            .config
            .parameters
            .iter()
            .filter(|(name, value)| is_list(name) && list_items(value).len() > 1)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (name, value) = *self.rng.pick(&candidates);
        let separator = if value.contains(',') { " " } else { ", " };
        let reformatted = list_items(value).join(separator);
        Some(Step::EditParameters(vec![(name.clone(), reformatted)]))
    }

    fn choose_option_edit(&mut self) -> Option<Step> {
        let keys: Vec<String> = SERVICES
            .iter()
            .flat_map(|s| port_keys(s))
            .filter(|k| self.model.config.entries.contains_key(k))
            .collect();
        if keys.is_empty() {
            return None;
        }
        let key = self.rng.pick(&keys).clone();
        let (name, values) = *self.rng.pick(&OPTION_EDITS);
        let current = self.model.config.entries[&key].options.get(name);
        let choices: Vec<&&str> = values
            .iter()
            .filter(|v| current.map(String::as_str) != Some(**v))
            .collect();
        let value = self.rng.pick(&choices).to_string();
        Some(Step::EditOption(key, name.into(), value))
    }

    /// Shortens sandbox paths in `text` for messages.
    fn shorten(&self, text: &str) -> String {
        let prefix = format!("{}/", self.sandbox.dir.path().display());
        text.replace(&prefix, "")
    }

    fn describe(&self, step: &Step) -> String {
        let text = match step {
            Step::Install(None) => "install with the current answers".to_string(),
            Step::Install(Some(answers)) => format!("preseed {answers}, install"),
            Step::Reinstall => "reinstall after remove".to_string(),
            Step::Upgrade => format!(
                "upgrade to the {:?} templates",
                self.model.templates.other()
            ),
            Step::Reconfigure(answers) => format!("reconfigure: {answers}"),
            Step::EditParameters(settings) => {
                let pairs: Vec<String> =
                    settings.iter().map(|(n, v)| format!("'{n}={v}'")).collect();
                format!("hand edit: postconf -e {}", pairs.join(" "))
            }
            Step::EditOption(key, name, value) => {
                format!("hand edit: postconf -P '{key}/{name}={value}'")
            }
            Step::Remove => "remove".to_string(),
            Step::Purge => "purge".to_string(),
        };
        self.shorten(&text)
    }

    fn history_text(&self) -> String {
        self.history
            .iter()
            .enumerate()
            .map(|(i, step)| format!("  {:3}. {step}\n", i + 1))
            .collect()
    }

    /// Panics with everything needed to understand and replay the failure.
    fn fail(&self, number: usize, problems: &[String]) -> ! {
        let problems: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}", self.shorten(p)))
            .collect();
        panic!(
            "{test}: seed {seed}, step {number}: the product and the model disagree:\n{problems}\n\
             steps so far:\n{history}\
             stderr of the binary in this step:\n{output}\n\
             replay: {SEED_VARIABLE}={seed} {STEPS_VARIABLE}={number} cargo test --test model {test}",
            test = self.test,
            seed = self.seed,
            problems = problems.join("\n"),
            history = self.history_text(),
            output = self.shorten(&self.output),
        )
    }

    fn perform(&mut self, number: usize, step: &Step) {
        match step {
            Step::Install(answers) => {
                if let Some(answers) = answers {
                    self.preseed(answers);
                }
                self.apply_twice(number);
            }
            Step::Reinstall => self.apply_twice(number),
            Step::Upgrade => {
                self.model.templates = self.model.templates.other();
                self.apply_twice(number);
            }
            Step::Reconfigure(answers) => {
                self.preseed(answers);
                self.apply_twice(number);
            }
            Step::EditParameters(settings) => {
                let mut args = vec!["-e".to_string()];
                args.extend(settings.iter().map(|(n, v)| format!("{n}={v}")));
                self.postconf_edit(number, &args);
                for (name, value) in settings {
                    self.model
                        .config
                        .parameters
                        .insert(name.clone(), value.clone());
                }
                self.check(number, false);
            }
            Step::EditOption(key, name, value) => {
                self.postconf_edit(number, &["-P".into(), format!("{key}/{name}={value}")]);
                let entry = self.model.config.entries.get_mut(key).unwrap();
                entry.options.insert(name.clone(), value.clone());
                self.check(number, false);
            }
            Step::Remove => {
                // remove reads no templates, so the directory only completes the command line.
                let templates = self.templates_dir();
                self.run_binary(number, "remove", &templates);
                self.model.remove();
                self.check(number, false);
            }
            Step::Purge => {
                let state = self.sandbox.path("state");
                if state.exists() {
                    fs::remove_dir_all(&state).unwrap();
                }
                self.sandbox.reset_debconf();
                self.model.purge();
                self.check(number, true);
            }
        }
    }

    fn preseed(&mut self, answers: &Answers) {
        let entries = answers.preseed();
        let borrowed: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|(name, kind, value)| (*name, *kind, value.as_str()))
            .collect();
        self.sandbox.preseed(&borrowed);
        self.model.answers = answers.clone();
    }

    /// Runs a hand edit with postconf, then dates main.cf and master.cf three seconds
    /// back. Postfix reads a configuration file again and again while it changed
    /// recently (for about two seconds with Postfix 3.7), and an admin's edit is not that
    /// recent when the package runs, so this only saves the test that wait.
    fn postconf_edit(&self, number: usize, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = self.sandbox.try_postconf(&args) {
            self.fail(number, &[format!("the hand edit failed: {e}")]);
        }
        let status = std::process::Command::new("touch")
            .args(["-d", "3 seconds ago"])
            .arg(self.sandbox.main_cf())
            .arg(self.sandbox.master_cf())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            self.fail(number, &[format!("touch -d failed: {status:?}")]);
        }
    }

    fn templates_dir(&self) -> PathBuf {
        match self.model.templates {
            TemplateSet::Shipped => self.fixtures.shipped_templates.clone(),
            TemplateSet::Changed => self.fixtures.changed_templates.clone(),
        }
    }

    fn run_binary(&mut self, number: usize, command: &str, templates: &Path) {
        let output = self.sandbox.run_with_templates(&[command], templates);
        let stderr = String::from_utf8_lossy(&output.stderr);
        self.output.push_str(&format!("[{command}]\n{stderr}"));
        if !output.status.success() {
            self.fail(
                number,
                &[format!(
                    "postfix-submission {command} failed ({})",
                    output.status
                )],
            );
        }
    }

    /// Runs `apply`, checks, then runs it again and checks that it wrote nothing.
    fn apply_twice(&mut self, number: usize) {
        let templates = self.templates_dir();
        let before = self.model.config.clone();
        let prints = self.sandbox.fingerprints();
        let kept = self.model.apply();
        if !kept.is_empty() {
            let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
            let note = format!(" (model keeps the hand edits of {})", names.join(", "));
            self.history.last_mut().unwrap().push_str(&note);
        }
        self.run_binary(number, "apply", &templates);
        if before.same_as(&self.model.config) {
            self.expect_unchanged(number, &prints, "an apply that changes no setting");
        }
        self.check(number, true);

        let first = self.model.config.clone();
        let prints = self.sandbox.fingerprints();
        self.model.apply();
        if !first.same_as(&self.model.config) {
            let mut problems = vec!["the model changes settings on a second apply:".to_string()];
            problems.extend(differences(&first, &self.model.config));
            self.fail(number, &problems);
        }
        self.run_binary(number, "apply", &templates);
        self.expect_unchanged(number, &prints, "a second apply");
        self.check(number, true);
    }

    fn expect_unchanged(&self, number: usize, before: &[Fingerprint; 2], what: &str) {
        let after = self.sandbox.fingerprints();
        for ((file, old), new) in ["main.cf", "master.cf"].iter().zip(before).zip(&after) {
            if old != new {
                self.fail(
                    number,
                    &[format!(
                        "{what} rewrote {file} (bytes, inode or mtime changed)"
                    )],
                );
            }
        }
    }

    /// Reads main.cf and master.cf through postconf. Main.cf parameters that nothing uses
    /// come from the "unused parameter: NAME=VALUE" warnings of `postconf -n`.
    fn read_config(&self) -> Result<Config, String> {
        let (shown, warnings) = self.sandbox.try_postconf(&["-n"])?;
        let mut parameters = parse_settings(&shown);
        for line in warnings.lines() {
            let Some((_, setting)) = line.split_once("main.cf: unused parameter: ") else {
                continue;
            };
            if let Some((name, value)) = setting.split_once('=') {
                parameters.insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        let mut entries = BTreeMap::new();
        for line in self.sandbox.try_postconf(&["-M"])?.0.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 2 {
                continue;
            }
            let entry = Entry {
                fields: words[..words.len().min(8)].join(" "),
                options: BTreeMap::new(),
            };
            entries.insert(format!("{}/{}", words[0], words[1]), entry);
        }
        for (name, value) in parse_settings(&self.sandbox.try_postconf(&["-P"])?.0) {
            let Some((key, option)) = name.rsplit_once('/') else {
                return Err(format!(
                    "postconf -P printed an option without service/type: {name}"
                ));
            };
            if let Some(entry) = entries.get_mut(key) {
                entry.options.insert(option.to_string(), value);
            }
        }
        Ok(Config {
            parameters,
            entries,
        })
    }

    fn master_comments(&self) -> Vec<String> {
        fs::read_to_string(self.sandbox.master_cf())
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    /// Compares the sandbox with the model; `answers` also compares the debconf answers.
    fn check(&self, number: usize, answers: bool) {
        let actual = match self.read_config() {
            Ok(config) => config,
            Err(e) => self.fail(number, &[e]),
        };
        let mut problems = differences(&self.model.config, &actual);

        let installed = self.model.lifecycle == Lifecycle::Installed;
        let entries = self.sandbox.try_postconf(&["-M"]).unwrap_or_default().0;
        for service in SERVICES {
            let keys = port_keys(service);
            let count = entries
                .lines()
                .filter(|line| {
                    let words: Vec<&str> = line.split_whitespace().take(2).collect();
                    keys.contains(&words.join("/"))
                })
                .count();
            let selected = installed && self.model.answers.services.contains(service);
            if count > 1 || (selected && count != 1) {
                problems.push(format!(
                    "postconf -M lists {count} entries for the port of {service} ({})",
                    keys.join(", ")
                ));
            }
        }
        if self.master_comments() != self.comments {
            problems.push("master.cf's comment lines changed".into());
        }
        for (what, path) in [
            ("the state record", self.sandbox.state_file()),
            ("the Dovecot snippet", self.sandbox.snippet()),
        ] {
            if path.exists() != installed {
                problems.push(format!(
                    "{what} {}exists while the package is {:?}",
                    if path.exists() { "" } else { "no longer " },
                    self.model.lifecycle
                ));
            }
        }
        if answers {
            problems.extend(self.answer_differences());
        }
        if !problems.is_empty() {
            self.fail(number, &problems);
        }
    }

    fn answer_differences(&self) -> Vec<String> {
        let stored = self.sandbox.answers();
        let mut found = Vec::new();
        for (name, _, value) in self.model.answers.preseed() {
            let actual = stored.get(name).map(String::as_str).unwrap_or("(missing)");
            let same = match name {
                "services" => list_items(actual) == list_items(&value),
                "sender_login_maps" => list_items(actual) == list_items(&value),
                _ => actual == value,
            };
            if !same {
                found.push(format!(
                    "debconf answer {name}: model {value:?}, debconf {actual:?}"
                ));
            }
        }
        found
    }
}

fn seed_and_steps(default_seed: u64) -> (u64, usize) {
    let seed = match std::env::var(SEED_VARIABLE) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_VARIABLE}={text:?} is not a number: {e}"))
        }
        Err(_) => default_seed,
    };
    let steps = match std::env::var(STEPS_VARIABLE) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{STEPS_VARIABLE}={text:?} is not a number: {e}")),
        Err(_) => DEFAULT_STEPS,
    };
    (seed, steps)
}

#[test]
fn walk_from_debian_defaults() {
    if !tools_present() {
        return;
    }
    let (seed, steps) = seed_and_steps(20_250_101);
    Walk::new("walk_from_debian_defaults", seed, Sandbox::new()).run(steps);
}

/// Starts from a system where the admin already has entries of their own for both ports
/// (`submission` and the older name `smtps`), HELO restrictions, AUTH on port 25, a
/// stricter outbound TLS level and relay restrictions with a policy service. The package
/// reuses the entries, keeps the stricter settings, and reverts restore values instead of
/// deleting them.
#[test]
fn walk_from_admin_settings() {
    if !tools_present() {
        return;
    }
    let (seed, steps) = seed_and_steps(4_242);
    let sandbox = Sandbox::new();
    sandbox.set_parameters(&[
        (
            "smtpd_helo_restrictions",
            "permit_mynetworks, reject_invalid_helo_hostname",
        ),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtp_tls_security_level", "encrypt"),
        (
            "smtpd_relay_restrictions",
            "permit_mynetworks, permit_sasl_authenticated, \
             check_policy_service unix:private/policy, reject_unauth_destination",
        ),
    ]);
    sandbox.postconf(&[
        "-M",
        "submission/inet=submission inet n - y - - smtpd -o syslog_name=postfix/submission \
         -o smtpd_milters=inet:127.0.0.1:11332 -o smtpd_tls_security_level=may",
        "smtps/inet=smtps inet n - y - - smtpd -o syslog_name=postfix/smtps \
         -o smtpd_tls_wrappermode=yes",
    ]);
    Walk::new("walk_from_admin_settings", seed, sandbox).run(steps);
}
