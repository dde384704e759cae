//! The built-in default config (the seed's sets, schedule and retention), and its commented text for `config init`.
//!
//! Both come from the same environment: `$DDATA` (else `/data`) is the `data` set's source and `$DBACKUP` (else
//! `~/.local/share/dbackup`) the backup root. The written file records the values they had, so it keeps working
//! when dbackup later runs from a timer without them; loading it gives the same settings as the built-in default.

use super::{BackupSet, Config, Method, Notifications, Retention, Schedule};
use crate::expand::Env;

/// The `data` set's source: `$DDATA`, else the seed's `/data`.
fn data_source(env: &Env) -> String {
    env.var("DDATA").unwrap_or("/data").to_string()
}

/// The config dbackup uses when no file exists: the seed's two sets, daily/weekly/weekly, keep 7 local and 5 external.
pub fn config(env: &Env) -> Config {
    Config {
        schema: None,
        backup_root: None,
        backup_sets: vec![
            BackupSet {
                name: "data".into(),
                sources: vec![data_source(env)],
                method: Method::Rsync,
                exclusions: vec!["tmp/*".into(), "*.tmp".into(), "*.log".into()],
                exclude_from: vec![],
                exclude_caches: false,
                exclude_if_present: vec![],
                rsync_args: vec![],
            },
            BackupSet {
                name: "config".into(),
                sources: vec!["~/.config".into(), "~/env.sh".into(), "~/.secrets".into()],
                method: Method::Rsync,
                exclusions: vec!["~/.config/Code/Cache/*".into()],
                exclude_from: vec![],
                exclude_caches: false,
                exclude_if_present: vec![],
                rsync_args: vec![],
            },
        ],
        schedule: Schedule::default(),
        retention: Retention::default(),
        destinations: vec![],
        external: Default::default(),
        encryption: None,
        notifications: Notifications::default(),
        image: super::ImageConfig::default(),
        report: Default::default(),
    }
}

/// The commented config `dbackup config init` writes: [`config`], with `backup_root` written out.
pub fn text(env: &Env) -> String {
    let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let (root, root_note) = match env.var("DBACKUP") {
        Some(v) => (
            json(v),
            "$DBACKUP, as it was when this file was written".to_string(),
        ),
        None => (
            json("~/.local/share/dbackup"),
            "$DBACKUP was not set when this file was written".to_string(),
        ),
    };
    let data_note = match env.var("DDATA") {
        Some(_) => "$DDATA, as it was when this file was written",
        None => "$DDATA was not set when this file was written: the seed's /data",
    };
    TEMPLATE
        .replace("{root}", &root)
        .replace("{root_note}", &root_note)
        .replace("{data}", &json(&data_source(env)))
        .replace("{data_note}", data_note)
}

const TEMPLATE: &str = r#"// dbackup configuration, written by `dbackup config init`.
//
// JSON, plus // and /* */ comments (no trailing commas). In paths, ~, $VAR and ${VAR}
// expand; every path must be absolute once expanded.
//   dbackup config check    validates this file and shows what it means
//   dbackup config schema   prints the JSON Schema it must match
{
  // Where the snapshots go: <backup_root>/<set>-<YYYY-MM-DD-HHMMSS>, plus a <set>-latest link.
  // {root_note}.
  "backup_root": {root},

  // What to back up. Each set has its own snapshots here and its own archive on the drive.
  "backup_sets": [
    {
      "name": "data",
      // {data_note}.
      "sources": [{data}],
      "method": "rsync",
      // rsync patterns without a leading / match anywhere in the set.
      "exclusions": ["tmp/*", "*.tmp", "*.log"]
    },
    {
      "name": "config",
      "sources": ["~/.config", "~/env.sh", "~/.secrets"],
      "method": "rsync",
      // Extra rsync options, appended to dbackup's own; uncomment to use:
      // "rsync_args": ["--bwlimit=50m"],
      // A path inside one of the sources excludes exactly that place.
      "exclusions": ["~/.config/Code/Cache/*"]
    }
  ],

  "schedule": {
    "incremental": "daily", // Options: hourly, daily, weekly, monthly
    "full": "weekly", // Options: daily, weekly, monthly, never (compare contents, not just size and time)
    "external": "weekly" // Options: daily, weekly, monthly, always, manual
  },

  // Removable drives for the external phase; uncomment and adapt:
  // "destinations": [
  //   { "name": "T9", "path": "/media/payne/T9", "fs_label": "T9" }
  // ],

  // Encrypt the archives on the drives with age (<set>.tar.age): run `dbackup keygen`, put the
  // age1... line it prints in "recipients", keep a copy of the identity away from the drive and
  // this computer (backing up never reads it; restore does); uncomment and adapt:
  // "encryption": { "recipients": ["age1..."], "identity_file": "~/.config/dbackup/identity.txt" },

  // Who hears about failures, warnings and a missing drive; uncomment and adapt:
  // "notifications": { "desktop": true, "command": ["/usr/local/bin/notify-me"] },

  // The status page, rewritten after every run at ~/.local/state/dbackup/report.html (`dbackup report`,
  // `dbackup serve`); uncomment to move it or to have `dbackup systemd render` add a unit that serves it:
  // "report": { "path": "~/backups.html", "serve": { "listen": "127.0.0.1:8422", "unit": true } },

  "retention": {
    "local": 7, // Snapshots kept per set; or a policy such as { "last": 7, "daily": 14, "weekly": 8, "monthly": 12 }
    "external": 5 // Backups kept on each drive
  }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::fake("/home/u", "/", vars)
    }

    #[test]
    fn the_text_loads_back_as_the_default() {
        for vars in [
            &[][..],
            &[("DDATA", "/home/u/data"), ("DBACKUP", "/srv/backup")][..],
        ] {
            let env = env(vars);
            let (mut parsed, _) =
                super::super::load::parse(Path::new("init.json"), &text(&env)).unwrap();
            let want_root = env
                .var("DBACKUP")
                .unwrap_or("~/.local/share/dbackup")
                .to_string();
            assert_eq!(parsed.backup_root.take(), Some(want_root));
            assert_eq!(parsed, config(&env), "with {vars:?}");
        }
    }

    #[test]
    fn the_default_is_the_seeds() {
        let c = config(&env(&[]));
        assert_eq!(c.backup_sets[0].sources, ["/data"]);
        assert_eq!(c.backup_sets[0].exclusions, ["tmp/*", "*.tmp", "*.log"]);
        assert_eq!(
            c.backup_sets[1].sources,
            ["~/.config", "~/env.sh", "~/.secrets"]
        );
        assert_eq!(c.backup_sets[1].exclusions, ["~/.config/Code/Cache/*"]);
        assert_eq!(
            c.retention,
            Retention {
                local: super::super::RetentionForm::Count(7),
                external: super::super::RetentionForm::Count(5),
                keep_at_least: 2,
            }
        );
        assert_eq!(
            config(&env(&[("DDATA", "/home/u/data")])).backup_sets[0].sources,
            ["/home/u/data"]
        );
    }

    #[test]
    fn the_commented_out_examples_are_valid_when_uncommented() {
        let env = env(&[]);
        let uncommented: String = text(&env)
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                match trimmed.strip_prefix("// ") {
                    Some(rest) if rest.trim_start().starts_with(['"', '{', ']']) => {
                        format!("{}{rest}\n", &line[..line.len() - trimmed.len()])
                    }
                    _ => format!("{line}\n"),
                }
            })
            .collect();
        let (parsed, _) = super::super::load::parse(Path::new("init.json"), &uncommented)
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(parsed.destinations[0].name, "T9");
        assert_eq!(parsed.backup_sets[1].rsync_args, ["--bwlimit=50m"]);
        assert!(parsed.notifications.desktop);
        let encryption = parsed.encryption.expect("the encryption example");
        assert_eq!(encryption.recipients, ["age1..."]);
        assert_eq!(
            encryption.identity_file.as_deref(),
            Some("~/.config/dbackup/identity.txt")
        );
    }

    #[test]
    fn the_text_escapes_odd_values() {
        let env = env(&[("DDATA", r#"/d"q\x"#)]);
        let (parsed, _) = super::super::load::parse(Path::new("init.json"), &text(&env)).unwrap();
        assert_eq!(parsed.backup_sets[0].sources, [r#"/d"q\x"#]);
    }
}
