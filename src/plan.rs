//! Deciding what to write: the settings the answers call for, compared with what main.cf
//! and master.cf hold now and with the record of what was applied before.
//!
//! Each managed setting is decided three ways, from the value last applied, the value in
//! the file now and the value the answers call for now:
//! - the file still holds what was applied: write the new value if it differs;
//! - the file holds something else (a hand edit): keep it, unless the answer that drives
//!   the setting changed since the last run, in which case the answer wins;
//! - a setting that is no longer called for is reverted to its value before the first
//!   write, unless it was edited by hand since.
//!
//! A plan is data: it is printed for `--dry-run`, and applied by the apply module.

use std::collections::BTreeMap;

use crate::answers::split_list;
use crate::postfix::MasterEntry;
use crate::render::{Desired, DesiredEntry};
use crate::state::{Change, EntryRecord, Record};

/// The settings that main.cf and master.cf contain now.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub parameters: BTreeMap<String, String>,
    /// Postfix's defaults (`postconf -d`), which an unset parameter has.
    pub defaults: BTreeMap<String, String>,
    pub entries: BTreeMap<String, MasterEntry>,
}

/// A setting whose hand-edited value was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptEdit {
    /// A main.cf parameter name, or `service/type/name` for a master.cf option.
    pub name: String,
    pub value: Option<String>,
}

/// The postconf calls to make, and the record to save once they succeed.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub set_parameters: Vec<(String, String)>,
    pub delete_parameters: Vec<String>,
    /// New entries as `service/type` and the whole `postconf -M` line.
    pub add_entries: Vec<(String, String)>,
    pub delete_entries: Vec<String>,
    /// Options as `service/type/name` and value.
    pub set_options: Vec<(String, String)>,
    pub delete_options: Vec<String>,
    pub kept_edits: Vec<KeptEdit>,
    /// One line each for the admin: hand edits kept, and similar.
    pub notices: Vec<String>,
    pub record: Record,
}

impl Plan {
    /// Tells whether the plan writes nothing to main.cf or master.cf.
    pub fn writes_nothing(&self) -> bool {
        self.set_parameters.is_empty()
            && self.delete_parameters.is_empty()
            && self.add_entries.is_empty()
            && self.delete_entries.is_empty()
            && self.set_options.is_empty()
            && self.delete_options.is_empty()
    }
}

/// The action to take on one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Keep,
    Write(String),
    Delete,
}

/// The facts about one setting that the decision rests on.
struct Setting<'a> {
    name: &'a str,
    /// The value the answers call for now; `None` when the setting is not wanted.
    wanted: Option<&'a str>,
    /// What the answers of the last run would render with today's templates; `None`
    /// when unknown (first run) or when the setting was not rendered then.
    wanted_before: Option<&'a str>,
    current: Option<&'a str>,
    /// The value Postfix uses when the setting is unset (`postconf -d`).
    default: Option<&'a str>,
    record: Option<&'a Change>,
    pending: bool,
    compare: fn(&str, &str) -> bool,
    /// Tells whether a current value (first argument) already gives what the wanted value
    /// (second) asks for, such as a stronger TLS level; such a value is not rewritten.
    satisfies: fn(&str, &str) -> bool,
}

impl Setting<'_> {
    /// Compares two values, an unset one counting as the default.
    fn same(&self, a: Option<&str>, b: Option<&str>) -> bool {
        match (a.or(self.default), b.or(self.default)) {
            (Some(a), Some(b)) => (self.compare)(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn current_satisfies(&self, wanted: &str) -> bool {
        match self.current.or(self.default) {
            Some(current) => (self.compare)(current, wanted) || (self.satisfies)(current, wanted),
            None => false,
        }
    }

    /// Tells whether the current value is a hand edit: one that differs from the value
    /// applied, except while an interrupted run had recorded a change it had not written.
    fn hand_edited(&self, change: &Change) -> bool {
        let unwritten = self.pending && self.same(self.current, change.original.as_deref());
        !self.same(self.current, Some(&change.applied)) && !unwritten
    }

    /// Decides the setting and returns the decision with the record entry to keep.
    fn decide(&self, plan: &mut Plan) -> (Decision, Option<Change>) {
        match (self.wanted, self.record) {
            (None, None) => (Decision::Keep, None),
            (Some(wanted), None) => {
                let decision = self.write_if_needed(wanted);
                let change = Change {
                    original: self.current.map(String::from),
                    applied: wanted.into(),
                    written: decision != Decision::Keep,
                };
                (decision, Some(change))
            }
            (Some(wanted), Some(change)) => self.decide_wanted(wanted, change, plan),
            (None, Some(change)) => (self.decide_revert(change, plan), None),
        }
    }

    fn write_if_needed(&self, wanted: &str) -> Decision {
        if self.current_satisfies(wanted) {
            Decision::Keep
        } else {
            Decision::Write(wanted.to_string())
        }
    }

    fn decide_wanted(
        &self,
        wanted: &str,
        change: &Change,
        plan: &mut Plan,
    ) -> (Decision, Option<Change>) {
        let mut kept = change.clone();
        let answer_changed = self
            .wanted_before
            .is_some_and(|before| !(self.compare)(before, wanted));
        let hand_edited = self.hand_edited(change);
        if !hand_edited || answer_changed {
            // The file holds the package's own value, or the answer changed: follow the
            // answers and templates exactly.
            let mut decision = if self.same(self.current, Some(wanted)) {
                Decision::Keep
            } else {
                Decision::Write(wanted.to_string())
            };
            // Going back to the default of a setting that was unset before the package
            // wrote it unsets it again, instead of writing the default out.
            let wanted_is_default = self.default.is_some_and(|d| (self.compare)(d, wanted));
            if decision != Decision::Keep && wanted_is_default && change.original.is_none() {
                decision = Decision::Delete;
            }
            kept.applied = wanted.to_string();
            // A value the package did not write stays the admin's: removal leaves it.
            kept.written = match decision {
                Decision::Keep => change.written && !hand_edited,
                _ => true,
            };
            return (decision, Some(kept));
        }
        if self.current_satisfies(wanted) {
            // The admin's value already gives what the package asks for: it stays theirs.
            kept.applied = wanted.to_string();
            kept.written = false;
            return (Decision::Keep, Some(kept));
        }
        plan.notices.push(format!(
            "kept the hand-edited {} = {}; the package would set {}",
            self.name,
            self.current.unwrap_or("(unset)"),
            wanted
        ));
        plan.kept_edits.push(KeptEdit {
            name: self.name.into(),
            value: self.current.map(String::from),
        });
        (Decision::Keep, Some(kept))
    }

    fn decide_revert(&self, change: &Change, plan: &mut Plan) -> Decision {
        if !change.written {
            return Decision::Keep;
        }
        if self.hand_edited(change) {
            plan.notices.push(format!(
                "left the hand-edited {} = {} in place instead of restoring its earlier value",
                self.name,
                self.current.unwrap_or("(unset)")
            ));
            return Decision::Keep;
        }
        match (&change.original, self.current) {
            (None, None) => Decision::Keep,
            (None, Some(_)) => Decision::Delete,
            (Some(original), Some(current)) if (self.compare)(current, original) => Decision::Keep,
            (Some(original), _) => Decision::Write(original.clone()),
        }
    }
}

/// Compares parameter values as Postfix reads them: list values by their items, so that
/// `a b` and `a, b` count as the same, other values after trimming.
pub fn same_parameter(name: &str) -> fn(&str, &str) -> bool {
    if name.ends_with("_restrictions") || name.ends_with("_maps") {
        |a, b| split_list(a) == split_list(b)
    } else {
        |a, b| a.trim() == b.trim()
    }
}

/// Returns the check that a current value already satisfies the wanted one, for the
/// settings where the admin's value may be stricter than the package's.
fn satisfies_parameter(name: &str) -> fn(&str, &str) -> bool {
    match name {
        "smtpd_tls_security_level" | "smtp_tls_security_level" => tls_level_at_least,
        "smtpd_relay_restrictions" => relay_restrictions_safe,
        _ => |_, _| false,
    }
}

/// Ranks TLS security levels: none, then may, then every mandatory level (encrypt, dane,
/// verify, secure and the rest), which the package never lowers.
fn tls_level_rank(level: &str) -> u8 {
    match level.trim() {
        "" | "none" => 0,
        "may" => 1,
        _ => 2,
    }
}

fn tls_level_at_least(current: &str, wanted: &str) -> bool {
    tls_level_rank(current) >= tls_level_rank(wanted)
}

/// Accepts the admin's own relay restrictions when they already permit logged-in users
/// before refusing other destinations, and permit nobody else unconditionally; such a
/// list (with a policy service, say) is left alone.
fn relay_restrictions_safe(current: &str, _wanted: &str) -> bool {
    let items = split_list(current);
    let refusal = items
        .iter()
        .position(|i| *i == "reject_unauth_destination" || *i == "defer_unauth_destination");
    let Some(refusal) = refusal else { return false };
    let before = &items[..refusal];
    before.contains(&"permit_sasl_authenticated") && !before.contains(&"permit")
}

fn same_option(a: &str, b: &str) -> bool {
    a == b
}

/// Other names of each service's port in master.cf: the port number, and the names that
/// /etc/services (Debian's netbase) gives port 465 besides `submissions`.
fn service_aliases(service: &str) -> &'static [&'static str] {
    match service {
        "submission" => &["587"],
        "submissions" => &["smtps", "ssmtp", "465"],
        _ => &[],
    }
}

/// Points each wanted entry at the admin's existing entry for the same port, such as
/// `smtps inet` for `submissions inet`, so that the package reuses it instead of adding a
/// second listener on the port. Entries bound to one address (`127.0.0.1:submission`) are
/// only reported, since they listen on fewer addresses than the package's entry would.
pub fn use_existing_entries(
    desired: &mut Desired,
    current: &Current,
    record: &Record,
    notices: &mut Vec<String>,
) {
    let keys: Vec<String> = desired.entries.keys().cloned().collect();
    for key in keys {
        let Some((service, kind)) = key.split_once('/') else {
            continue;
        };
        if current.entries.contains_key(&key) || record.entries.contains_key(&key) {
            continue;
        }
        let aliases = service_aliases(service)
            .iter()
            .map(|alias| format!("{alias}/{kind}"));
        let existing = aliases
            .into_iter()
            .find(|alias| current.entries.contains_key(alias));
        if let Some(alias) = existing {
            let entry = desired
                .entries
                .remove(&key)
                .expect("key taken from the map");
            desired.entries.insert(alias, entry);
            continue;
        }
        let mut names = vec![service];
        names.extend(service_aliases(service));
        for existing in current.entries.keys() {
            let Some((name, existing_kind)) = existing.split_once('/') else {
                continue;
            };
            let bound = name.rsplit_once(':').map(|(_, port)| port);
            if existing_kind == kind && bound.is_some_and(|port| names.contains(&port)) {
                notices.push(format!(
                    "master.cf also has {existing}, on the port of {key} but for one address; \
                     connections to that address may reach either entry, so remove one of them"
                ));
            }
        }
    }
}

/// Computes the plan. `before` is what the answers of the last run render to with the
/// current templates, `None` on a first run.
pub fn compute(
    desired: &Desired,
    before: Option<&Desired>,
    current: &Current,
    record: &Record,
) -> Plan {
    let mut plan = Plan::default();
    plan.record.answers = record.answers.clone();
    plan.record.dovecot_snippet = record.dovecot_snippet.clone();
    plan_parameters(desired, before, current, record, &mut plan);
    plan_entries(desired, before, current, record, &mut plan);
    plan
}

fn plan_parameters(
    desired: &Desired,
    before: Option<&Desired>,
    current: &Current,
    record: &Record,
    plan: &mut Plan,
) {
    let mut names: Vec<&String> = desired
        .parameters
        .keys()
        .chain(record.parameters.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let setting = Setting {
            name,
            wanted: desired.parameters.get(name).map(String::as_str),
            wanted_before: before
                .and_then(|b| b.parameters.get(name))
                .map(String::as_str),
            current: current.parameters.get(name).map(String::as_str),
            default: current.defaults.get(name).map(String::as_str),
            record: record.parameters.get(name),
            pending: record.pending,
            compare: same_parameter(name),
            satisfies: satisfies_parameter(name),
        };
        let (decision, change) = setting.decide(plan);
        match decision {
            Decision::Keep => {}
            Decision::Write(value) => plan.set_parameters.push((name.clone(), value)),
            Decision::Delete => plan.delete_parameters.push(name.clone()),
        }
        if let Some(change) = change {
            plan.record.parameters.insert(name.clone(), change);
        }
    }
}

fn plan_entries(
    desired: &Desired,
    before: Option<&Desired>,
    current: &Current,
    record: &Record,
    plan: &mut Plan,
) {
    for (key, entry) in &desired.entries {
        match current.entries.get(key) {
            Some(existing) => {
                let created = record.entries.get(key).is_some_and(|r| r.created);
                plan.record
                    .entries
                    .insert(key.clone(), EntryRecord { created });
                plan_options(key, Some(entry), before, existing, record, plan);
            }
            None => plan_missing_entry(key, entry, before, record, plan),
        }
    }
    for (key, entry_record) in &record.entries {
        if desired.entries.contains_key(key) {
            continue;
        }
        let Some(existing) = current.entries.get(key) else {
            continue;
        };
        if entry_record.created {
            plan.delete_entries.push(key.clone());
        } else {
            plan_options(key, None, before, existing, record, plan);
        }
    }
}

/// Handles a wanted entry that master.cf does not have: a new one is added, but one that
/// the package had added and the admin deleted stays deleted unless its service was just
/// selected.
fn plan_missing_entry(
    key: &str,
    entry: &DesiredEntry,
    before: Option<&Desired>,
    record: &Record,
    plan: &mut Plan,
) {
    let deleted_by_hand = record.entries.contains_key(key) && !record.pending;
    let newly_selected = before.is_some_and(|b| !b.entries.contains_key(key));
    if deleted_by_hand && !newly_selected {
        plan.notices.push(format!(
            "the master.cf entry {key} was deleted by hand, so it was not added again; \
             run 'dpkg-reconfigure postfix-submission' to deselect its service"
        ));
        plan.kept_edits.push(KeptEdit {
            name: key.to_string(),
            value: None,
        });
        plan.record
            .entries
            .insert(key.to_string(), record.entries[key].clone());
        copy_option_records(key, record, plan);
        return;
    }
    plan.add_entries.push((key.to_string(), entry.line()));
    plan.record
        .entries
        .insert(key.to_string(), EntryRecord { created: true });
    for (name, value) in &entry.options {
        let change = Change {
            original: None,
            applied: value.clone(),
            written: true,
        };
        plan.record.options.insert(format!("{key}/{name}"), change);
    }
}

fn copy_option_records(key: &str, record: &Record, plan: &mut Plan) {
    let prefix = format!("{key}/");
    for (name, change) in record.options.range(prefix.clone()..) {
        if !name.starts_with(&prefix) {
            break;
        }
        plan.record.options.insert(name.clone(), change.clone());
    }
}

/// Decides the `-o` options of an existing entry, wanted (`entry` is `Some`) or not.
fn plan_options(
    key: &str,
    entry: Option<&DesiredEntry>,
    before: Option<&Desired>,
    existing: &MasterEntry,
    record: &Record,
    plan: &mut Plan,
) {
    let wanted: BTreeMap<&str, &str> = entry
        .map(|e| {
            e.options
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let wanted_before: BTreeMap<&str, &str> = before
        .and_then(|b| b.entries.get(key))
        .map(|e| {
            e.options
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let prefix = format!("{key}/");
    let recorded = record
        .options
        .range(prefix.clone()..)
        .take_while(|(n, _)| n.starts_with(&prefix));
    let mut names: Vec<&str> = wanted.keys().copied().collect();
    names.extend(recorded.map(|(n, _)| &n[prefix.len()..]));
    names.sort();
    names.dedup();
    for name in names {
        let full = format!("{key}/{name}");
        let setting = Setting {
            name: &full,
            wanted: wanted.get(name).copied(),
            wanted_before: wanted_before.get(name).copied(),
            current: existing.options.get(name).map(String::as_str),
            default: None,
            record: record.options.get(&full),
            pending: record.pending,
            compare: same_option,
            satisfies: |_, _| false,
        };
        let (decision, change) = setting.decide(plan);
        match decision {
            Decision::Keep => {}
            Decision::Write(value) => plan.set_options.push((full.clone(), value)),
            Decision::Delete => plan.delete_options.push(full.clone()),
        }
        if let Some(change) = change {
            plan.record.options.insert(full, change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(parameters: &[(&str, &str)], entries: &[(&str, &[(&str, &str)])]) -> Desired {
        Desired {
            parameters: parameters
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            entries: entries
                .iter()
                .map(|(key, options)| {
                    let service = key.split('/').next().unwrap();
                    let entry = DesiredEntry {
                        fields: format!("{service} inet n - y - - smtpd"),
                        options: options
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_string()))
                            .collect(),
                    };
                    (key.to_string(), entry)
                })
                .collect(),
        }
    }

    fn current(parameters: &[(&str, &str)], entries: &[(&str, &[(&str, &str)])]) -> Current {
        Current {
            defaults: BTreeMap::new(),
            parameters: parameters
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            entries: entries
                .iter()
                .map(|(key, options)| {
                    let service = key.split('/').next().unwrap();
                    let entry = MasterEntry {
                        key: key.to_string(),
                        fields: format!("{service} inet n - y - - smtpd"),
                        options: options
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_string()))
                            .collect(),
                    };
                    (key.to_string(), entry)
                })
                .collect(),
        }
    }

    /// Applies a plan to a `Current` the way postconf would, for multi-step tests.
    fn apply(plan: &Plan, desired: &Desired, now: &mut Current) {
        for (name, value) in &plan.set_parameters {
            now.parameters.insert(name.clone(), value.clone());
        }
        for name in &plan.delete_parameters {
            now.parameters.remove(name);
        }
        for (key, _) in &plan.add_entries {
            let entry = &desired.entries[key];
            let master = MasterEntry {
                key: key.clone(),
                fields: entry.fields.clone(),
                options: entry.options.iter().cloned().collect(),
            };
            now.entries.insert(key.clone(), master);
        }
        for (full, value) in &plan.set_options {
            let (key, name) = full.rsplit_once('/').unwrap();
            now.entries
                .get_mut(key)
                .unwrap()
                .options
                .insert(name.into(), value.clone());
        }
        for full in &plan.delete_options {
            let (key, name) = full.rsplit_once('/').unwrap();
            now.entries.get_mut(key).unwrap().options.remove(name);
        }
        for key in &plan.delete_entries {
            now.entries.remove(key);
        }
    }

    #[test]
    fn first_run_writes_differences_only() {
        let want = desired(&[("a", "1"), ("b", "2")], &[]);
        let now = current(&[("a", "1"), ("b", "old")], &[]);
        let plan = compute(&want, None, &now, &Record::default());
        assert_eq!(
            plan.set_parameters,
            vec![("b".to_string(), "2".to_string())]
        );
        assert_eq!(plan.record.parameters["b"].original.as_deref(), Some("old"));
        assert_eq!(plan.record.parameters["a"].original.as_deref(), Some("1"));
    }

    #[test]
    fn second_run_writes_nothing() {
        let want = desired(&[("a", "1")], &[("submission/inet", &[("x", "y")])]);
        let mut now = current(&[], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        let second = compute(&want, Some(&want), &now, &first.record);
        assert!(second.writes_nothing(), "{second:?}");
        assert_eq!(second.record, first.record);
    }

    #[test]
    fn list_values_compare_by_items() {
        let want = desired(
            &[("smtpd_relay_restrictions", "permit_mynetworks, reject")],
            &[],
        );
        let now = current(
            &[("smtpd_relay_restrictions", "permit_mynetworks reject")],
            &[],
        );
        assert!(compute(&want, None, &now, &Record::default()).writes_nothing());
    }

    #[test]
    fn hand_edit_kept_unless_answer_changed() {
        let want = desired(&[("cert", "/a.pem")], &[]);
        let mut now = current(&[], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        now.parameters.insert("cert".into(), "/hand.pem".into());

        let rerun = compute(&want, Some(&want), &now, &first.record);
        assert!(rerun.writes_nothing());
        assert_eq!(
            rerun.kept_edits,
            vec![KeptEdit {
                name: "cert".into(),
                value: Some("/hand.pem".into())
            }]
        );
        assert_eq!(rerun.notices.len(), 1);

        let new_answer = desired(&[("cert", "/b.pem")], &[]);
        let changed = compute(&new_answer, Some(&want), &now, &first.record);
        assert_eq!(
            changed.set_parameters,
            vec![("cert".to_string(), "/b.pem".to_string())]
        );
        assert!(changed.kept_edits.is_empty());
    }

    #[test]
    fn template_change_rewrites_untouched_setting_only() {
        let old = desired(&[("a", "1"), ("b", "1")], &[]);
        let mut now = current(&[], &[]);
        let first = compute(&old, None, &now, &Record::default());
        apply(&first, &old, &mut now);
        now.parameters.insert("b".into(), "hand".into());
        let new = desired(&[("a", "2"), ("b", "2")], &[]);
        // Same answers, new templates: `before` renders the old answers with the new
        // templates, so it equals `new`.
        let plan = compute(&new, Some(&new), &now, &first.record);
        assert_eq!(
            plan.set_parameters,
            vec![("a".to_string(), "2".to_string())]
        );
        assert_eq!(plan.kept_edits.len(), 1);
    }

    #[test]
    fn unwanted_setting_reverted_to_original() {
        let want = desired(&[("a", "1"), ("b", "1")], &[]);
        let mut now = current(&[("a", "orig")], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        let nothing = Desired::default();
        let plan = compute(&nothing, Some(&want), &now, &first.record);
        assert_eq!(
            plan.set_parameters,
            vec![("a".to_string(), "orig".to_string())]
        );
        assert_eq!(plan.delete_parameters, vec!["b".to_string()]);
        assert!(plan.record.is_empty());
    }

    #[test]
    fn revert_leaves_hand_edit() {
        let want = desired(&[("a", "1")], &[]);
        let mut now = current(&[], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        now.parameters.insert("a".into(), "hand".into());
        let plan = compute(&Desired::default(), None, &now, &first.record);
        assert!(plan.writes_nothing());
        assert_eq!(plan.notices.len(), 1);
        assert!(plan.record.is_empty());
    }

    #[test]
    fn interrupted_run_is_not_a_hand_edit() {
        let want = desired(&[("a", "1"), ("b", "2")], &[]);
        let now = current(&[("a", "orig")], &[]);
        let mut record = compute(&want, None, &now, &Record::default()).record;
        record.pending = true;
        // Nothing was written before the interruption: the rerun writes everything.
        let plan = compute(&want, Some(&want), &now, &record);
        assert_eq!(plan.set_parameters.len(), 2);
        assert_eq!(
            plan.record.parameters["a"].original.as_deref(),
            Some("orig")
        );
        assert!(plan.kept_edits.is_empty());
    }

    #[test]
    fn new_entry_added_whole_then_removed() {
        let want = desired(
            &[],
            &[("submission/inet", &[("syslog_name", "postfix/submission")])],
        );
        let mut now = current(&[], &[]);
        let first = compute(&want, None, &now, &Record::default());
        assert_eq!(first.add_entries.len(), 1);
        assert!(first.add_entries[0]
            .1
            .ends_with("-o syslog_name=postfix/submission"));
        assert!(first.set_options.is_empty());
        apply(&first, &want, &mut now);
        let removal = compute(&Desired::default(), None, &now, &first.record);
        assert_eq!(removal.delete_entries, vec!["submission/inet".to_string()]);
        assert!(removal.delete_options.is_empty());
        assert!(removal.record.is_empty());
    }

    #[test]
    fn admin_entry_reused_and_extra_options_kept() {
        let want = desired(&[], &[("submission/inet", &[("a", "1"), ("b", "2")])]);
        let existing: &[(&str, &str)] = &[("milter", "x"), ("a", "orig")];
        let mut now = current(&[], &[("submission/inet", existing)]);
        let first = compute(&want, None, &now, &Record::default());
        assert!(first.add_entries.is_empty());
        assert_eq!(
            first.set_options,
            vec![
                ("submission/inet/a".to_string(), "1".to_string()),
                ("submission/inet/b".to_string(), "2".to_string())
            ]
        );
        assert!(!first.record.entries["submission/inet"].created);
        apply(&first, &want, &mut now);
        let removal = compute(&Desired::default(), None, &now, &first.record);
        assert!(removal.delete_entries.is_empty());
        assert_eq!(
            removal.set_options,
            vec![("submission/inet/a".to_string(), "orig".to_string())]
        );
        assert_eq!(
            removal.delete_options,
            vec!["submission/inet/b".to_string()]
        );
        apply(&removal, &want, &mut now);
        assert_eq!(now.entries["submission/inet"].options.len(), 2);
        assert_eq!(now.entries["submission/inet"].options["milter"], "x");
    }

    #[test]
    fn stronger_tls_level_never_lowered() {
        let want = desired(&[("smtp_tls_security_level", "may")], &[]);
        let now = current(&[("smtp_tls_security_level", "dane")], &[]);
        let plan = compute(&want, None, &now, &Record::default());
        assert!(plan.writes_nothing(), "{plan:?}");
        let weaker = current(&[("smtp_tls_security_level", "none")], &[]);
        let plan = compute(&want, None, &weaker, &Record::default());
        assert_eq!(plan.set_parameters.len(), 1);
    }

    #[test]
    fn admin_relay_policy_kept() {
        let want = desired(
            &[(
                "smtpd_relay_restrictions",
                "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
            )],
            &[],
        );
        let policy = "permit_mynetworks, permit_sasl_authenticated, check_policy_service unix:private/policy, reject_unauth_destination";
        let now = current(&[("smtpd_relay_restrictions", policy)], &[]);
        assert!(compute(&want, None, &now, &Record::default()).writes_nothing());
        let open_relay = current(
            &[(
                "smtpd_relay_restrictions",
                "permit, reject_unauth_destination",
            )],
            &[],
        );
        assert_eq!(
            compute(&want, None, &open_relay, &Record::default())
                .set_parameters
                .len(),
            1
        );
        let no_sasl = current(
            &[(
                "smtpd_relay_restrictions",
                "permit_mynetworks, reject_unauth_destination",
            )],
            &[],
        );
        assert_eq!(
            compute(&want, None, &no_sasl, &Record::default())
                .set_parameters
                .len(),
            1
        );
    }

    #[test]
    fn unset_counts_as_default() {
        let want = desired(&[("smtpd_sasl_auth_enable", "no")], &[]);
        let mut now = current(&[], &[]);
        now.defaults
            .insert("smtpd_sasl_auth_enable".into(), "no".into());
        let plan = compute(&want, None, &now, &Record::default());
        assert!(plan.writes_nothing(), "{plan:?}");
        now.parameters
            .insert("smtpd_sasl_auth_enable".into(), "yes".into());
        let plan = compute(&want, None, &now, &Record::default());
        assert_eq!(
            plan.set_parameters,
            vec![("smtpd_sasl_auth_enable".to_string(), "no".to_string())]
        );
    }

    #[test]
    fn value_found_in_place_survives_removal() {
        // The answer is automatic and follows the current certificate, which the admin
        // changes: the package never wrote it, so removal must not put back the old one.
        let old = desired(&[("cert", "/old.pem")], &[]);
        let mut now = current(&[("cert", "/old.pem")], &[]);
        let first = compute(&old, None, &now, &Record::default());
        assert!(first.writes_nothing());
        now.parameters.insert("cert".into(), "/new.pem".into());
        let new = desired(&[("cert", "/new.pem")], &[]);
        let second = compute(&new, Some(&new), &now, &first.record);
        assert!(second.writes_nothing());
        let removal = compute(&Desired::default(), None, &now, &second.record);
        assert!(removal.writes_nothing(), "{removal:?}");
    }

    #[test]
    fn adopted_hand_edit_survives_removal() {
        let want = desired(&[("cert", "/a.pem")], &[]);
        let mut now = current(&[("cert", "/orig.pem")], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        now.parameters.insert("cert".into(), "/hand.pem".into());
        // The answer adopts the hand value, so the next run wants it too.
        let adopted = desired(&[("cert", "/hand.pem")], &[]);
        let second = compute(&adopted, Some(&adopted), &now, &first.record);
        assert!(second.writes_nothing());
        let removal = compute(&Desired::default(), None, &now, &second.record);
        assert!(removal.writes_nothing(), "{removal:?}");
    }

    #[test]
    fn template_change_rolls_out_over_own_value() {
        let relay = "smtpd_relay_restrictions";
        let old = desired(
            &[(
                relay,
                "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
            )],
            &[],
        );
        let mut now = current(&[], &[]);
        let first = compute(&old, None, &now, &Record::default());
        apply(&first, &old, &mut now);
        let new = desired(
            &[(
                relay,
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
            )],
            &[],
        );
        let upgrade = compute(&new, Some(&new), &now, &first.record);
        assert_eq!(upgrade.set_parameters.len(), 1, "{upgrade:?}");
    }

    #[test]
    fn existing_smtps_entry_reused() {
        let mut want = desired(&[], &[("submissions/inet", &[("a", "1")])]);
        let now = current(&[], &[("smtps/inet", &[("milter", "x")])]);
        let mut notices = Vec::new();
        use_existing_entries(&mut want, &now, &Record::default(), &mut notices);
        assert!(want.entries.contains_key("smtps/inet"));
        assert!(!want.entries.contains_key("submissions/inet"));
        let plan = compute(&want, None, &now, &Record::default());
        assert!(plan.add_entries.is_empty());
        assert_eq!(
            plan.set_options,
            vec![("smtps/inet/a".to_string(), "1".to_string())]
        );
        assert!(notices.is_empty());
    }

    #[test]
    fn address_bound_entry_reported() {
        let mut want = desired(&[], &[("submission/inet", &[])]);
        let now = current(&[], &[("127.0.0.1:submission/inet", &[])]);
        let mut notices = Vec::new();
        use_existing_entries(&mut want, &now, &Record::default(), &mut notices);
        assert!(want.entries.contains_key("submission/inet"));
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].contains("127.0.0.1:submission/inet"),
            "{}",
            notices[0]
        );
    }

    #[test]
    fn entry_deleted_by_hand_stays_deleted() {
        let want = desired(&[], &[("submission/inet", &[("a", "1")])]);
        let mut now = current(&[], &[]);
        let first = compute(&want, None, &now, &Record::default());
        apply(&first, &want, &mut now);
        now.entries.clear();
        let rerun = compute(&want, Some(&want), &now, &first.record);
        assert!(rerun.writes_nothing());
        assert_eq!(rerun.notices.len(), 1);
        // Selecting the service again (it was not wanted before) adds it back.
        let reselected = compute(&want, Some(&Desired::default()), &now, &first.record);
        assert_eq!(reselected.add_entries.len(), 1);
    }
}
