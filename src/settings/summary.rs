//! The settings in words: what `dbackup config check` prints (sources as configured, expanded and resolved;
//! exclusions and how rsync reads them; schedule, retention, destinations with their encryption, notifications).

use std::fmt::Write as _;

use super::{Exclusion, Output, Settings};
use crate::config::ConfigError;
use crate::config::load;
use crate::config::load::{ConfigSource, Loaded};
use crate::expand::Env;

impl Settings {
    /// What `config check` shows: the settings, and its warnings (each file the config names that is absent, the
    /// sources two sets both copy). With `allow_missing_files` (a Nix build sandbox has no home), an `exclude_from`
    /// or rsync filter file that does not exist is a warning too, its rules left out, instead of a problem.
    pub fn for_check(
        loaded: &Loaded,
        env: &Env,
        output: Output,
        allow_missing_files: bool,
    ) -> Result<(Settings, Vec<String>), ConfigError> {
        let absent = std::cell::RefCell::new(Vec::new());
        let settings =
            Settings::build(loaded, env, output, allow_missing_files.then_some(&absent))?;
        let unread = absent.into_inner().into_iter().map(|p| {
            format!(
                "{} does not exist, so its rules were not checked; every other command refuses the config until \
                 it does",
                p.display()
            )
        });
        let warnings = unread
            .chain(absent_files(&settings))
            .chain(exposed_key_files(&settings))
            .chain(overlapping_sources(&settings))
            .collect();
        Ok((settings, warnings))
    }
}

/// The files the config names that are not there now, one warning each, for `config check`: a valid config may name
/// them (a source that is mounted later, keys a secrets manager writes at boot), but a typo shows up here, not in
/// the first night's run.
fn absent_files(s: &Settings) -> Vec<String> {
    let gone = |p: &std::path::Path| std::fs::symlink_metadata(p).is_err();
    let mut out = Vec::new();
    for set in &s.sets {
        let missing: Vec<&std::path::Path> = set
            .sources
            .iter()
            .map(|src| src.path.as_path())
            .filter(|p| gone(p))
            .collect();
        if !missing.is_empty() && missing.len() == set.sources.len() {
            out.push(format!(
                "set {}: no source of it exists ({}); collect refuses the set until one does",
                set.name,
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        for p in missing {
            out.push(format!(
                "set {}: source {} does not exist; while it is missing, the set's snapshots lack it and are \
                 marked incomplete",
                set.name,
                p.display()
            ));
        }
    }
    let mut encryption: Vec<(&str, &super::EncryptionSettings)> = Vec::new();
    for d in &s.destinations {
        if let Some(e) = &d.encryption {
            encryption.push((&d.name, e));
        }
    }
    for c in &s.clouds {
        if let Some(f) = c.credentials_file.as_deref().filter(|f| gone(f)) {
            out.push(format!(
                "cloud destination {}: credentials file {} does not exist; uploads fail until it does \
                 (`dbackup cloud check {}` tests the keys)",
                c.name,
                f.display(),
                c.name
            ));
        }
        if let Some(e) = &c.encryption {
            encryption.push((&c.name, e));
        }
    }
    for (name, e) in encryption {
        if let Some(f) = e.identity_file.as_deref().filter(|_| e.reads_only()) {
            out.push(format!(
                "destination {name}: its encryption names only identity_file {}: restores from it work, backups \
                 to it are refused until encryption.recipients names its public key (`age-keygen -y {}` prints it)",
                f.display(),
                f.display()
            ));
        }
        let files = [
            ("recipients_file", &e.recipients_file, "backups to it fail"),
            (
                "passphrase_file",
                &e.passphrase_file,
                "unattended backups to it fail",
            ),
            (
                "identity_file",
                &e.identity_file,
                "restores from it need --identity",
            ),
        ];
        for (key, file, then) in files {
            if let Some(f) = file.as_deref().filter(|f| gone(f)) {
                out.push(format!(
                    "destination {name}: {key} {} does not exist; {then} until it does",
                    f.display()
                ));
            }
        }
    }
    out
}

/// The identity and passphrase files the config names that users other than their owner can read, one warning each
/// (a file several destinations share is named once): reading a passphrase file refuses it, and an identity is a key
/// to every backup encrypted to it.
fn exposed_key_files(s: &Settings) -> Vec<String> {
    let encryption = s
        .destinations
        .iter()
        .filter_map(|d| d.encryption.as_ref())
        .chain(s.clouds.iter().filter_map(|c| c.encryption.as_ref()));
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in encryption {
        for (what, file) in [
            ("identity file", &e.identity_file),
            ("passphrase file", &e.passphrase_file),
        ] {
            if let Some(f) = file.as_deref().filter(|f| seen.insert(f.to_path_buf())) {
                out.extend(crate::stdx::key_file_exposed(f, what));
            }
        }
    }
    out
}

/// Sources that two sets both copy, for `config check` to warn of: the same path, or one inside another that the
/// outer set does not keep out with an anchored exclusion. Each set keeps its own copy: twice the space, and two
/// archives of the same files on every drive.
fn overlapping_sources(s: &Settings) -> Vec<String> {
    let kept_out = |set: &super::SetSettings, inner: &std::path::Path| {
        set.exclusions.iter().any(|e| {
            matches!(e, Exclusion::Anchored { include: false, .. })
                && inner.starts_with(
                    e.rsync_pattern()
                        .trim_end_matches('*')
                        .trim_end_matches('/'),
                )
        })
    };
    let mut out = Vec::new();
    for (i, a) in s.sets.iter().enumerate() {
        for (j, b) in s.sets.iter().enumerate().filter(|(j, _)| *j != i) {
            for sa in &a.sources {
                for sb in &b.sources {
                    let (outer, inner) = (&sa.resolved, &sb.resolved);
                    if outer == inner && i < j {
                        out.push(format!(
                            "sets {} and {} both copy {}: each keeps a copy of its own (twice the space); \
                             drop it from one of them",
                            a.name,
                            b.name,
                            inner.display()
                        ));
                    } else if outer != inner && inner.starts_with(outer) && !kept_out(a, inner) {
                        out.push(format!(
                            "set {}'s source {} is inside set {}'s source {}, which copies it too (twice the \
                             space); add it to the exclusions of {}, or drop it from {}",
                            b.name,
                            inner.display(),
                            a.name,
                            outer.display(),
                            a.name,
                            b.name
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The settings in words: what `config check` prints.
// Stays long: the settings printed in the order `config check` shows them, one short block per key.
pub fn summary(s: &Settings, env: &Env) -> String {
    let mut out = String::new();
    let w = &mut out;
    match &s.config_source {
        ConfigSource::File(p) => {
            let _ = writeln!(w, "config {}: valid", p.display());
        }
        ConfigSource::BuiltIn => {
            let _ = writeln!(
                w,
                "config: the built-in default (there is no {}; `dbackup config init` writes one to edit)",
                load::default_config_path(env).display()
            );
        }
    }
    let _ = writeln!(w, "backup root: {}", s.backup_root.display());
    let _ = writeln!(w, "run log:     {}", s.state_dir.display());

    for set in &s.sets {
        let _ = writeln!(w, "\nset {}", set.name);
        for src in &set.sources {
            let mut line = src.configured.clone();
            if src.path.as_os_str() != src.configured.as_str() {
                let _ = write!(line, " = {}", src.path.display());
            }
            if src.resolved != src.path {
                let _ = write!(line, " -> {}", src.resolved.display());
            }
            if std::fs::symlink_metadata(&src.resolved).is_err() {
                line.push_str("  (missing now; collect will report it)");
            }
            let _ = writeln!(w, "  source   {line}");
        }
        for x in &set.exclusions {
            let verb = if x.is_include() { "include" } else { "exclude" };
            match x {
                Exclusion::Pattern { pattern, .. } => {
                    let _ = writeln!(
                        w,
                        "  {verb}  {pattern}  (pattern: matches anywhere in the set)"
                    );
                }
                Exclusion::Anchored {
                    configured,
                    pattern,
                    ..
                } if configured.trim_start_matches('!') == pattern => {
                    let _ = writeln!(w, "  {verb}  {pattern}  (exactly this path)");
                }
                Exclusion::Anchored {
                    configured,
                    pattern,
                    ..
                } => {
                    let _ = writeln!(
                        w,
                        "  {verb}  {}  (exactly this path: {pattern})",
                        configured.trim_start_matches('!')
                    );
                }
            }
        }
        for file in &set.exclude_from {
            let _ = writeln!(w, "  rules    from {}", file.display());
        }
        if set.exclude_caches {
            let _ = writeln!(
                w,
                "  exclude  directories holding a valid CACHEDIR.TAG (found when collect runs)"
            );
        }
        for marker in &set.exclude_if_present {
            let _ = writeln!(
                w,
                "  exclude  directories holding {marker} (found when collect runs)"
            );
        }
        if set.exclusions.is_empty() && !set.exclude_caches && set.exclude_if_present.is_empty() {
            let _ = writeln!(w, "  exclude  nothing");
        }
        if !set.rsync_args.is_empty() {
            let _ = writeln!(w, "  rsync    {}", set.rsync_args.join(" "));
        }
    }

    let sched = &s.schedule;
    let _ = writeln!(
        w,
        "\nschedule:  collect {}, compare contents {}, external {}",
        word(&sched.incremental),
        word(&sched.full),
        word(&sched.external)
    );
    let r = &s.retention_local;
    let rules: Vec<String> = [
        ("last", r.last),
        ("hourly", r.hourly),
        ("daily", r.daily),
        ("weekly", r.weekly),
        ("monthly", r.monthly),
        ("yearly", r.yearly),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|n| format!("{k} {n}")))
    .collect();
    let _ = writeln!(
        w,
        "retention: local snapshots per set: {}; external backups per destination: {} (space-aware rotation \
         keeps at least {})",
        rules.join(", "),
        crate::retention::describe(&s.retention_external),
        s.keep_at_least
    );

    if s.destinations.is_empty() && !s.clouds.is_empty() {
        let _ = writeln!(w, "destinations: no drive");
    } else if s.destinations.is_empty() {
        let _ = writeln!(
            w,
            "destinations: none (the external phase has nowhere to write)"
        );
    } else {
        let _ = writeln!(w, "destinations (mode {}):", word(&s.external_mode));
        for d in &s.destinations {
            let mut facts = vec![
                format!("keep {}", crate::retention::describe(&d.retention)),
                format!("at least {}", d.keep_at_least),
                format!("priority {}", d.priority),
            ];
            if let Some(l) = &d.fs_label {
                facts.push(format!("label {l}"));
            }
            if let Some(u) = &d.fs_uuid {
                facts.push(format!("uuid {u}"));
            }
            facts.push(if d.require_mount {
                "must be a mount point".into()
            } else {
                "need not be a mount point".into()
            });
            if let Some(own) = d.schedule {
                facts.push(format!("its own schedule {}", word(&own)));
            }
            let _ = writeln!(
                w,
                "  {}  {}  ({})",
                d.name,
                d.path.display(),
                facts.join(", ")
            );
            if let Some(e) = &d.encryption {
                let mut to: Vec<String> = e.recipients.clone();
                if let Some(f) = &e.recipients_file {
                    to.push(format!("the recipients in {}", f.display()));
                }
                if e.passphrase {
                    to.push(match &e.passphrase_file {
                        Some(f) => format!("a passphrase (read from {})", f.display()),
                        None => "a passphrase (asked on the terminal)".into(),
                    });
                }
                if e.reads_only() {
                    to.push("nothing: reads backups only (no recipients)".into());
                }
                let _ = writeln!(w, "      encrypted with age to {}", to.join(", "));
                match &e.identity_file {
                    Some(f) => {
                        let _ = writeln!(w, "      restore decrypts with {}", f.display());
                    }
                    None if !e.passphrase => {
                        let _ = writeln!(
                            w,
                            "      restore needs --identity FILE (no identity_file configured)"
                        );
                    }
                    None => {}
                }
            }
        }
    }
    if !s.clouds.is_empty() {
        let _ = writeln!(w, "cloud destinations:");
    }
    for c in &s.clouds {
        let mut facts = vec![
            format!("keep {}", crate::retention::describe(&c.retention)),
            format!("priority {}", c.priority),
            match c.schedule {
                Some(own) => format!("its own schedule {}", word(&own)),
                None => format!("schedule.external ({})", word(&sched.external)),
            },
            if c.encryption.as_ref().is_some_and(|e| e.reads_only()) {
                "age, reads backups only (no recipients)".into()
            } else if c.encryption.is_some() {
                "encrypted with age".into()
            } else {
                "PLAIN archives (allow_unencrypted)".into()
            },
        ];
        if let Some(d) = c.object_lock_days {
            facts.push(format!("Object Lock {d} days"));
        }
        if let Some(class) = &c.storage_class_archives {
            facts.push(format!("archives in {class}"));
        }
        let _ = writeln!(w, "  {}  {}  ({})", c.name, c.place(), facts.join(", "));
    }

    let n = &s.notifications;
    let events: Vec<String> = n.events.iter().map(word).collect();
    let mut to = Vec::new();
    if n.desktop {
        to.push("desktop".to_string());
    }
    if let Some(c) = &n.command {
        to.push(format!("command {}", crate::stdx::redact_argv(c).join(" ")));
    }
    if let Some(u) = &n.http {
        to.push(format!("POST {}", crate::stdx::redact_url(u)));
    }
    let to = if to.is_empty() {
        "nowhere (the run log only)".to_string()
    } else {
        to.join(", ")
    };
    let _ = writeln!(
        w,
        "notifications: {} -> {to}; low disk below {}% free",
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(", ")
        },
        n.low_disk_percent
    );
    out
}

/// A unit enum value as the config spells it.
fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}
