//! Tests of the pure renderer: which units, triggers and settings each schedule and scope gets.

use super::*;
use crate::config::Full;

fn input(external: ExternalSchedule) -> Input {
    Input {
        schedule: Schedule {
            incremental: Incremental::Daily,
            full: Full::Weekly,
            external,
        },
        backup_root: "/srv/backup".into(),
        state_dir: "/home/payne/.local/state/dbackup".into(),
        destinations: vec![
            Drive {
                name: "T9".into(),
                path: "/media/payne/T9".into(),
                fs_uuid: None,
                fs_label: Some("T9".into()),
            },
            Drive {
                name: "spare".into(),
                path: "/run/media/payne/my-spare".into(),
                fs_uuid: Some("6be7-a7d5".into()),
                fs_label: None,
            },
            Drive {
                name: "nas".into(),
                path: "/mnt/nas".into(),
                fs_uuid: None,
                fs_label: None,
            },
        ],
        online: false,
        environment: BTreeMap::from([("DDATA".to_string(), "/data 1".to_string())]),
        programs: vec!["blkid".into(), "rsync".into()],
        serve: None,
        report_dir: None,
    }
}

fn target(scope: Scope) -> Target {
    Target {
        scope,
        exe: "/opt/dbackup/bin/dbackup".into(),
        config: Some("/home/payne/.config/dbackup/config.json".into()),
        user: "payne".into(),
    }
}

fn get<'u>(r: &'u Rendered, unit: &str, section: &str, key: &str) -> Option<&'u Value> {
    r.units.get(unit)?.get(section)?.get(key)
}

fn one(s: &str) -> Option<Value> {
    Some(Value::One(s.to_string()))
}

fn many(items: &[&str]) -> Option<Value> {
    Some(Value::Many(items.iter().map(|s| s.to_string()).collect()))
}

#[test]
fn system_units_for_a_weekly_external_schedule() {
    let r = render(&input(ExternalSchedule::Weekly), &target(Scope::System)).unwrap();
    assert_eq!(
        r.units.keys().collect::<Vec<_>>(),
        [COLLECT_SERVICE, COLLECT_TIMER, EXTERNAL_SERVICE]
    );
    let dbackup = "/opt/dbackup/bin/dbackup --config /home/payne/.config/dbackup/config.json";
    let mounts = [
        "media-payne-T9.mount",
        "run-media-payne-my\\x2dspare.mount",
        "mnt-nas.mount",
    ];
    let after: Vec<&str> = [COLLECT_SERVICE].into_iter().chain(mounts).collect();
    let wait = format!("{dbackup} systemd wait-for-drive --timeout 60");
    let backup = one(&format!("{dbackup} backup"));
    let environment = many(&["\"DDATA=/data 1\""]);
    let (collect, external, timer) = (COLLECT_SERVICE, EXTERNAL_SERVICE, COLLECT_TIMER);
    // (unit, section, key, value); the external service runs `backup` too: backup decides whether the drive is due.
    for (unit, section, key, want) in [
        (collect, "Service", "ExecStart", backup.clone()),
        (external, "Service", "ExecStart", backup),
        (external, "Service", "ExecStartPre", many(&[&wait])),
        (collect, "Service", "SuccessExitStatus", many(&["3"])),
        (external, "Service", "SuccessExitStatus", many(&["3 5"])),
        (collect, "Service", "User", one("payne")),
        (collect, "Service", "Environment", environment),
        (timer, "Timer", "OnCalendar", one("daily")),
        (timer, "Timer", "Persistent", one("true")),
        (external, "Unit", "After", many(&after)),
        (external, "Install", "WantedBy", many(&mounts)),
    ] {
        let got = get(&r, unit, section, key).cloned();
        assert_eq!(got, want, "{unit} [{section}] {key}");
    }
    assert_eq!(r.udev_rules.as_deref(), Some(UDEV_RULES));
    let rules = &r.files[UDEV_RULES];
    let lines: Vec<&str> = rules.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{ID_FS_LABEL}==\"T9\", TAG+=\"systemd\", ENV{SYSTEMD_WANTS}+=\"dbackup-external.service\"",
            "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{ID_FS_UUID}==\"6[Bb][Ee]7-[Aa]7[Dd]5\", TAG+=\"systemd\", ENV{SYSTEMD_WANTS}+=\"dbackup-external.service\"",
        ]
    );
    assert!(rules.contains("# destination nas: /mnt/nas: no fs_uuid or fs_label"));
    assert_eq!(r.files.len(), 4);
}

/// Item 5 of issue 14: the system units are hardened like nixpkgs' borgbackup module, and may write only the backup
/// root, the run log's directory and the drives (main had `ProtectSystem=full` alone: all of /home, /srv and /var
/// writable, kernel tunables, modules, logs and control groups reachable).
#[test]
fn system_units_are_hardened_and_write_only_the_root_the_state_and_the_drives() {
    let r = render(&input(ExternalSchedule::Weekly), &target(Scope::System)).unwrap();
    for unit in [COLLECT_SERVICE, EXTERNAL_SERVICE] {
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("ProtectHostname", "yes"),
            ("LockPersonality", "yes"),
            ("RestrictRealtime", "yes"),
            ("SystemCallArchitectures", "native"),
        ] {
            assert_eq!(
                get(&r, unit, "Service", key).cloned(),
                one(want),
                "{unit} {key}"
            );
        }
        assert_eq!(
            get(&r, unit, "Service", "ReadWritePaths").cloned(),
            many(&[
                "/srv/backup",
                "/home/payne/.local/state/dbackup",
                "-/media/payne/T9",
                "-/run/media/payne/my-spare",
                "-/mnt/nas",
            ]),
            "{unit}"
        );
        // It backs up /home, and blkid reads the drives' devices.
        for absent in [
            "ProtectHome",
            "PrivateDevices",
            "ProtectClock",
            "RestrictSUIDSGID",
        ] {
            assert_eq!(get(&r, unit, "Service", absent), None, "{unit} {absent}");
        }
    }
    assert_eq!(r.programs, ["blkid", "rsync"]);
    // payne has no capability to keep; root keeps its own.
    assert_eq!(
        get(&r, COLLECT_SERVICE, "Service", "CapabilityBoundingSet").cloned(),
        one("")
    );
    let mut root = target(Scope::System);
    root.user = "root".into();
    let r = render(&input(ExternalSchedule::Weekly), &root).unwrap();
    assert_eq!(
        get(&r, COLLECT_SERVICE, "Service", "CapabilityBoundingSet"),
        None
    );

    // A path that needs quoting is quoted, the `-` inside the quotes.
    let mut i = input(ExternalSchedule::Weekly);
    i.destinations.truncate(1);
    i.destinations[0].path = "/media/payne/My 50% Disk".into();
    let r = render(&i, &target(Scope::System)).unwrap();
    assert_eq!(
        get(&r, COLLECT_SERVICE, "Service", "ReadWritePaths").cloned(),
        many(&[
            "/srv/backup",
            "/home/payne/.local/state/dbackup",
            "\"-/media/payne/My 50%% Disk\"",
        ])
    );
}

#[test]
fn user_units_have_no_user_no_udev_rule_and_no_namespaces() {
    let r = render(&input(ExternalSchedule::Always), &target(Scope::User)).unwrap();
    assert_eq!(get(&r, COLLECT_SERVICE, "Service", "User"), None);
    for namespaced in [
        "ProtectSystem",
        "ReadWritePaths",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectHostname",
    ] {
        assert_eq!(
            get(&r, COLLECT_SERVICE, "Service", namespaced),
            None,
            "{namespaced}"
        );
    }
    // seccomp needs no namespace: the user units get these too.
    for key in ["NoNewPrivileges", "LockPersonality", "RestrictRealtime"] {
        assert_eq!(
            get(&r, COLLECT_SERVICE, "Service", key).cloned(),
            one("yes"),
            "{key}"
        );
    }
    assert_eq!(r.udev_rules, None);
    assert_eq!(r.files.len(), 3);
    assert_eq!(
        get(&r, EXTERNAL_SERVICE, "Service", "ExecStart").cloned(),
        one("/opt/dbackup/bin/dbackup --config /home/payne/.config/dbackup/config.json backup"),
    );
    assert!(get(&r, EXTERNAL_SERVICE, "Install", "WantedBy").is_some());
}

#[test]
fn manual_installs_no_trigger() {
    for scope in [Scope::System, Scope::User] {
        let r = render(&input(ExternalSchedule::Manual), &target(scope)).unwrap();
        assert!(
            !r.units[EXTERNAL_SERVICE].contains_key("Install"),
            "{scope:?}"
        );
        assert_eq!(r.udev_rules, None);
        assert!(!r.files.contains_key(UDEV_RULES));
        assert_eq!(
            get(&r, EXTERNAL_SERVICE, "Service", "ExecStart").cloned(),
            one(
                "/opt/dbackup/bin/dbackup --config /home/payne/.config/dbackup/config.json external"
            )
        );
    }
}

#[test]
fn no_destination_means_no_trigger() {
    let mut i = input(ExternalSchedule::Weekly);
    i.destinations.clear();
    let r = render(&i, &target(Scope::System)).unwrap();
    assert!(!r.units[EXTERNAL_SERVICE].contains_key("Install"));
    assert_eq!(get(&r, EXTERNAL_SERVICE, "Service", "ExecStartPre"), None);
    assert_eq!(r.udev_rules, None);
    assert_eq!(
        get(&r, EXTERNAL_SERVICE, "Unit", "After").cloned(),
        many(&[COLLECT_SERVICE])
    );
    // Destinations udev cannot recognise: the mount units still trigger, but there is no rules file.
    let mut i = input(ExternalSchedule::Weekly);
    i.destinations.truncate(0);
    i.destinations
        .push(input(ExternalSchedule::Weekly).destinations[2].clone());
    let r = render(&i, &target(Scope::System)).unwrap();
    assert_eq!(r.udev_rules, None);
    assert!(r.units[EXTERNAL_SERVICE].contains_key("Install"));
}

#[test]
fn every_incremental_value_is_a_timer() {
    for (inc, delay) in [
        (Incremental::Hourly, "5min"),
        (Incremental::Daily, "1h"),
        (Incremental::Weekly, "1h"),
        (Incremental::Monthly, "1h"),
    ] {
        let mut i = input(ExternalSchedule::Weekly);
        i.schedule.incremental = inc;
        let r = render(&i, &target(Scope::User)).unwrap();
        assert_eq!(
            get(&r, COLLECT_TIMER, "Timer", "OnCalendar").cloned(),
            one(&word(&inc))
        );
        assert_eq!(
            get(&r, COLLECT_TIMER, "Timer", "RandomizedDelaySec").cloned(),
            one(delay)
        );
    }
}

#[test]
fn odd_paths_are_quoted_and_bad_ones_refused() {
    let mut t = target(Scope::System);
    t.exe = "/opt/my tools/dbackup".into();
    t.config = Some("/home/payne/50%/$conf.json".into());
    let r = render(&input(ExternalSchedule::Weekly), &t).unwrap();
    assert_eq!(
        get(&r, COLLECT_SERVICE, "Service", "ExecStart").cloned(),
        one("\"/opt/my tools/dbackup\" --config \"/home/payne/50%%/$$conf.json\" backup")
    );
    t.config = None;
    let r = render(&input(ExternalSchedule::Weekly), &t).unwrap();
    assert_eq!(
        get(&r, COLLECT_SERVICE, "Service", "ExecStart").cloned(),
        one("\"/opt/my tools/dbackup\" backup")
    );

    let mut i = input(ExternalSchedule::Weekly);
    i.destinations[0].fs_label = Some("T*".into());
    let err = render(&i, &target(Scope::System)).unwrap_err().to_string();
    assert!(
        err.starts_with("destination \"T9\": fs_label \"T*\" cannot be matched by a udev rule"),
        "{err}"
    );
    // The user scope has no udev rule, so the label does not matter there.
    assert!(render(&i, &target(Scope::User)).is_ok());

    let mut i = input(ExternalSchedule::Weekly);
    i.destinations[0].path = "/media/a\nb".into();
    let err = render(&i, &target(Scope::User)).unwrap_err().to_string();
    assert!(err.contains("control character"), "{err}");
}

#[test]
fn unit_text_orders_sections_and_settings() {
    let r = render(&input(ExternalSchedule::Weekly), &target(Scope::System)).unwrap();
    let text = &r.files[EXTERNAL_SERVICE];
    assert!(text.starts_with(HEADER));
    let sections: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(sections, ["[Unit]", "[Service]", "[Install]"]);
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "Description",
            "Documentation",
            "After",
            "After",
            "After",
            "After",
            "RequiresMountsFor",
            "Type",
            "User",
            "Environment",
            "ExecStartPre",
            "ExecStart",
            "SuccessExitStatus",
            "Restart",
            "RestartPreventExitStatus",
            "RestartSec",
            "Nice",
            "CPUSchedulingPolicy",
            "IOSchedulingClass",
            "NoNewPrivileges",
            "ProtectSystem",
            "ReadWritePaths",
            "ReadWritePaths",
            "ReadWritePaths",
            "ReadWritePaths",
            "ReadWritePaths",
            "PrivateTmp",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectHostname",
            "CapabilityBoundingSet",
            "LockPersonality",
            "RestrictRealtime",
            "SystemCallArchitectures",
            "WantedBy",
            "WantedBy",
            "WantedBy",
        ]
    );
}

#[test]
fn variables_are_found_as_expand_reads_them() {
    assert_eq!(variables("$DDATA/x"), ["DDATA"]);
    assert_eq!(variables("${A}/$B_2/$$C/$/${9x}/$"), ["A", "B_2"]);
    assert_eq!(variables("~/plain"), Vec::<String>::new());
}

#[test]
fn input_carries_the_variables_the_config_uses() {
    use crate::config::load;
    use crate::config::load::ConfigSource;
    use crate::settings::Output;
    let text = r#"{ "backup_sets": [ { "name": "a", "sources": ["$DDATA", "~/x", "$HOME/y"], "exclusions": ["${CACHE}/*"] } ],
        "destinations": [ { "name": "T9", "path": "$MEDIA/T9", "fs_label": "T9" } ] }"#;
    let (config, positions) = load::parse(Path::new("c.json"), text).unwrap();
    let vars = [
        ("DDATA", "/data"),
        ("CACHE", "Cache"),
        ("MEDIA", "/media/payne"),
        ("HOME", "/home/payne"),
        ("DBACKUP", "/srv/bk"),
        ("UNUSED", "x"),
    ];
    let env = Env::fake("/home/payne", "/", &vars);
    let loaded = load::Loaded {
        config: config.clone(),
        source: ConfigSource::File("c.json".into()),
        positions,
    };
    let settings = Settings::from_loaded(&loaded, &env, Output::default()).unwrap();
    let i = Input::new(&settings, &config, &env);
    assert_eq!(
        i.environment,
        BTreeMap::from(
            [
                ("CACHE", "Cache"),
                ("DBACKUP", "/srv/bk"),
                ("DDATA", "/data"),
                ("MEDIA", "/media/payne")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        )
    );
    assert_eq!(i.backup_root, Path::new("/srv/bk"));
    assert_eq!(i.state_dir, Path::new("/home/payne/.local/state/dbackup"));
    assert_eq!(i.programs, ["blkid", "rsync"]);
    assert_eq!(i.destinations[0].path, Path::new("/media/payne/T9"));
}

#[test]
fn the_serve_unit_only_when_asked_for() {
    for scope in [Scope::System, Scope::User] {
        let r = render(&input(ExternalSchedule::Weekly), &target(scope)).unwrap();
        assert!(!r.units.contains_key(SERVE_SERVICE), "off by default");
        let mut i = input(ExternalSchedule::Weekly);
        i.serve = Some("127.0.0.1:8422".into());
        let r = render(&i, &target(scope)).unwrap();
        // `--out` removes what a later render no longer has: every file is one it knows.
        for name in r.files.keys() {
            assert!(FILES.contains(&name.as_str()), "{name} is not in FILES");
        }
        let unit = &r.units[SERVE_SERVICE];
        let service = &unit["Service"];
        assert_eq!(
            service["ExecStart"],
            Value::from(
                "/opt/dbackup/bin/dbackup --config /home/payne/.config/dbackup/config.json serve"
            )
        );
        assert_eq!(service["Type"], Value::from("exec"));
        assert_eq!(
            unit["Unit"]["Description"],
            Value::from("dbackup: the status page at http://127.0.0.1:8422/ (read-only)")
        );
        let wanted = match scope {
            Scope::System => "multi-user.target",
            Scope::User => "default.target",
        };
        assert_eq!(
            unit["Install"]["WantedBy"],
            Value::Many(vec![wanted.into()])
        );
        assert_eq!(
            service.get("ProtectSystem"),
            (scope == Scope::System)
                .then(|| Value::from("strict"))
                .as_ref()
        );
        assert!(r.files[SERVE_SERVICE].contains("ExecStart="));
    }
}

/// The install commands for each scope, line by line (the systemctl lines are written once for both scopes; before,
/// each scope had its own copy of them, and nothing checked either).
#[test]
fn install_instructions_enable_the_units_for_each_scope() {
    let mut i = input(ExternalSchedule::Weekly);
    i.serve = Some("127.0.0.1:8080".into());
    let system = [
        "  sudo cp /tmp/units/dbackup-collect.service /tmp/units/dbackup-collect.timer /tmp/units/dbackup-external.service /tmp/units/dbackup-serve.service /etc/systemd/system/",
        "  sudo cp /tmp/units/99-dbackup.rules /etc/udev/rules.d/ && sudo udevadm control --reload",
        "  sudo systemctl daemon-reload",
        "  sudo systemctl enable --now dbackup-collect.timer",
        "  sudo systemctl enable dbackup-external.service",
        "  sudo systemctl enable --now dbackup-serve.service",
    ];
    let user = [
        "  systemctl --user daemon-reload",
        "  systemctl --user enable --now dbackup-collect.timer",
        "  systemctl --user enable dbackup-external.service",
        "  systemctl --user enable --now dbackup-serve.service",
        "  loginctl enable-linger \"$USER\"   # optional: run the timer while you are logged out",
    ];
    // (scope, the lines before those checked: the heading and the directories or the copy, the lines)
    for (scope, before, want) in [(Scope::System, 3, &system[..]), (Scope::User, 2, &user[..])] {
        let r = render(&i, &target(scope)).unwrap();
        let text = install::instructions(
            &r,
            &i,
            "payne",
            Path::new("/home/payne"),
            Some(Path::new("/tmp/units")),
        );
        let got: Vec<&str> = text.lines().skip(before).collect();
        assert_eq!(got, want, "{scope:?}");
    }
}

/// The directory the files were written to is quoted for the shell in the commands to copy and paste: before, a
/// directory with a space (or `$(...)`) gave `sudo cp /tmp/my units/dbackup-collect.service ...`, which copies
/// other files, or runs what the name holds.
#[test]
fn install_instructions_quote_the_directory() {
    let i = input(ExternalSchedule::Weekly);
    let dir = Path::new("/tmp/my units $(x)");
    let r = render(&i, &target(Scope::System)).unwrap();
    let text = install::instructions(&r, &i, "payne", Path::new("/home/payne"), Some(dir));
    assert!(
        text.contains(
            "  sudo cp '/tmp/my units $(x)/dbackup-collect.service' '/tmp/my units $(x)/dbackup-collect.timer' \
             '/tmp/my units $(x)/dbackup-external.service' /etc/systemd/system/\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  sudo cp '/tmp/my units $(x)/99-dbackup.rules' /etc/udev/rules.d/ "),
        "{text}"
    );
    let r = render(&i, &target(Scope::User)).unwrap();
    let text = install::instructions(&r, &i, "payne", Path::new("/home/payne"), Some(dir));
    assert!(
        text.contains("&& cp '/tmp/my units $(x)/dbackup-collect.service' "),
        "{text}"
    );
}

/// A backup root below the user's home is made by the user (`sudo -u`), so the directories above it that are
/// missing are theirs: `sudo install -d` made them root's (with the default root, a missing `~/.local/share` became
/// root's, and the user's programs could no longer write there). One outside the home is still made with sudo.
#[test]
fn install_instructions_make_a_root_below_the_home_as_the_user() {
    let mut i = input(ExternalSchedule::Weekly);
    i.backup_root = "/home/payne/.local/share/dbackup".into();
    let r = render(&i, &target(Scope::System)).unwrap();
    let home = Path::new("/home/payne");
    let text = install::instructions(&r, &i, "payne", home, None);
    assert!(
        text.contains("\n  sudo -u payne mkdir -p -m 0700 /home/payne/.local/share/dbackup "),
        "{text}"
    );
    assert!(!text.contains("install -d"), "{text}");
    let i = input(ExternalSchedule::Weekly);
    let text = install::instructions(&r, &i, "payne", home, None);
    assert!(
        text.contains("\n  sudo install -d -m 0700 -o payne /srv/backup "),
        "{text}"
    );
}
