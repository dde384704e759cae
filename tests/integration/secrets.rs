//! The brief's "secrets appear in no output, log, store path or object", swept across every command: one world that
//! holds every kind of secret dbackup can be given (an age identity, a passphrase file, s3 keys in a credentials file
//! and in the environment with a session token, b2 keys, notification URLs with user info, topic and `?token=`),
//! each a distinctive marker; every command run in its modes (`--json`, `--dry-run`, `-v`, `-vv`) and its errors on
//! purpose (wrong key, wrong identity, wrong passphrase, server killed, closed port); then stdout, stderr, every file
//! dbackup wrote (backup root, drive, state, pages), the bucket's objects, `serve`'s answers, the rendered units and
//! the notifications' bodies are searched for the markers. Then the secret files dbackup reads that the config does
//! not name (`$DBACKUP_PASSPHRASE_FILE`'s, the AWS shared files), kept in the backed-up home: a plain drive's or
//! bucket's archive leaves them out as it does the config's.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use testkit::objstore::{REGION, closed_port};

use crate::cloud::garage_and_client;
use crate::harness::{Cmd, Output, Test};

/// An HTTP receiver on 127.0.0.1 that answers 200 and keeps every request (head and body).
fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            crate::backup::answer_request(stream, |head, body| {
                // The request line and the Authorization header carry the receiver's own URL: only the body and
                // the other headers are dbackup's to keep clean.
                let head: String = head
                    .lines()
                    .skip(1)
                    .filter(|l| !l.to_ascii_lowercase().starts_with("authorization:"))
                    .collect::<Vec<_>>()
                    .join("\n");
                keep.lock()
                    .unwrap()
                    .push(format!("{head}\n\n{}", String::from_utf8_lossy(&body)));
            });
        }
    });
    (port, got)
}

/// Every file under `dir` (its name and content), but those under `except`: `(path, text)`.
fn files_under(dir: &Path, except: &[&Path]) -> Vec<(String, String)> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !except.iter().any(|x| e.path() == *x))
        .map(|e| e.unwrap())
        .map(|e| {
            let content = if e.file_type().is_file() {
                String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned()
            } else {
                String::new()
            };
            (e.path().display().to_string(), content)
        })
        .collect()
}

/// Every secret, in every place it was searched for: the places that hold one, with the secret, and the first
/// characters around it.
fn leaks(places: &[(String, String)], secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (place, text) in places {
        let lower = text.to_ascii_lowercase();
        for s in secrets {
            if let Some(at) = lower.find(&s.to_ascii_lowercase()) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                let to = text[at..]
                    .char_indices()
                    .nth(120)
                    .map_or(text.len(), |(i, _)| at + i);
                found.push(format!("{place}: {s:?} in ...{}...", &text[from..to]));
            }
        }
    }
    found
}

/// The sweep. A drive (a plain directory) encrypted to an age recipient, a bucket on Garage encrypted to a
/// passphrase with its keys in a credentials file, the same bucket under another prefix with its keys and a session
/// token in the environment, a b2 destination (unreachable from here) with its keys in the environment, a bucket on
/// a closed port, and both notification sinks with secrets in their URLs. Every command and mode runs, then its
/// errors: a wrong secret in the credentials file, an identity that is not the backup's, a wrong passphrase, the
/// server killed. No marker may appear in anything dbackup printed, wrote, uploaded, served, rendered or sent.
#[test]
fn no_secret_appears_in_any_output_file_object_page_or_notification() {
    let Some((mut g, s3)) = garage_and_client() else {
        return;
    };
    let (port, received) = receiver();
    let t = Test::new();
    fs::create_dir_all(t.path("secrets")).unwrap();
    fs::create_dir_all(t.path("drive")).unwrap();
    let (identity, recipient) = t.keygen("secrets/identity.txt");
    let (other_identity, _) = t.keygen("secrets/other.txt");
    let age_secret = crate::fixtures::age::secret_of(&identity);
    let passphrase = "MK-passphrase-correct-horse-7781";
    let pass_file = t.write_secret("secrets/pass.txt", format!("{passphrase}\n"));
    let wrong_pass = t.write_secret("secrets/wrong-pass.txt", "MK-wrong-passphrase-0451\n");
    let credentials = t.write_secret(
        "secrets/offsite.ini",
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key.id, g.key.secret
        ),
    );
    let events = t.path("events.txt");
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}/docs"] }} ],
             "encryption": {{ "recipients": ["{recipient}"], "identity_file": "{identity}" }},
             "external": {{ "mode": "all" }},
             "destinations": [
               {{ "name": "drive", "path": "{{tmp}}/drive", "require_mount": false }},
               {{ "name": "offsite", "kind": "s3", "endpoint": "{endpoint}", "bucket": "{bucket}", "region": "{REGION}",
                 "prefix": "laptop", "credentials_file": "{credentials}", "retries": 1, "timeout_seconds": 10,
                 "encryption": {{ "passphrase": true, "passphrase_file": "{pass}" }} }},
               {{ "name": "envoff", "kind": "s3", "endpoint": "{endpoint}", "bucket": "{bucket}", "region": "{REGION}",
                 "prefix": "env", "retries": 1, "timeout_seconds": 10 }},
               {{ "name": "gone", "kind": "s3", "endpoint": "http://127.0.0.1:{closed}", "bucket": "{bucket}",
                 "region": "{REGION}", "retries": 1, "timeout_seconds": 5 }},
               {{ "name": "b2", "kind": "b2", "bucket": "mk-b2-bucket", "bucket_id": "4a48fe8875c6214145260818",
                 "retries": 1, "timeout_seconds": 5 }} ],
             "notifications": {{
               "http": "http://MKuser:MKhttppw@127.0.0.1:{port}/MKtopic?token=MKqtoken",
               "command": ["/bin/sh", "-c", "cat >> {events}; env | grep ^DBACKUP_ >> {events}", "sh",
                           "https://MKcmduser:MKcmdpw@ntfy.sh/MKcmdtopic"],
               "events": ["success", "failure", "warning", "missing_media", "low_disk", "overdue"] }},
             "report": {{ "serve": {{ "unit": true }} }} }}"#,
        endpoint = g.endpoint(),
        bucket = g.bucket,
        identity = identity.display(),
        credentials = credentials.display(),
        pass = pass_file.display(),
        closed = closed_port(),
        events = events.display(),
    );
    let t = t
        .config(&config)
        .env("AWS_ACCESS_KEY_ID", &g.key.id)
        .env("AWS_SECRET_ACCESS_KEY", &g.key.secret)
        .env("AWS_SESSION_TOKEN", "MKsessiontoken0123456789")
        .env("B2_APPLICATION_KEY_ID", "MKb2keyid0001")
        .env("B2_APPLICATION_KEY", "MKb2applicationkey")
        .env("DBACKUP_PASSPHRASE_FILE", &pass_file);
    t.write("home/docs/a.txt", "hello\n");
    t.write(
        "home/docs/b.bin",
        crate::fixtures::drive::content(200 << 10, 7),
    );
    let secrets: Vec<String> = [
        age_secret.as_str(),
        &g.key.id,
        &g.key.secret,
        passphrase,
        "MK-wrong-passphrase",
        "MKsessiontoken",
        "MKb2keyid",
        "MKb2applicationkey",
        "MKuser",
        "MKhttppw",
        "MKtopic",
        "MKqtoken",
        "MKcmduser",
        "MKcmdpw",
        "MKcmdtopic",
        "MKwrongsecret",
        "X-Amz-Signature=",
        "Credential=GK",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut printed: Vec<(String, String)> = Vec::new();
    let mut run = |args: &[&str]| -> Output {
        let out = t.cmd().args(args).output();
        printed.push((
            format!("dbackup {}", args.join(" ")),
            format!("{}\n{}", out.stdout, out.stderr),
        ));
        out
    };
    let r = |p: &Path| p.display().to_string();
    let docs = r(&t.home().join("docs"));
    let restored = |name: &str| r(&t.path(&format!("restored/{name}")));

    // Every command, in its modes.
    for args in [
        &["config", "check"][..],
        &["--json", "config", "check"],
        &["-vv", "--dry-run", "collect"],
        &["-vv", "collect"],
        &["--json", "--dry-run", "external"],
        &["-v", "--dry-run", "external"],
        &["-vv", "external", "--destination", "drive"],
        &["-vv", "external", "--destination", "offsite"],
        &["--json", "external", "--destination", "envoff"],
        &["-v", "external", "--destination", "b2"],
        &["-v", "external", "--destination", "gone"],
        &["-v", "--dry-run", "backup"],
        &["--json", "backup", "--force"],
        &["-v", "backup", "--force"],
        &["restore", "--list"],
        &["--json", "restore", "--list", "--source", "cloud"],
        &["snapshots"],
        &["-v", "restore", "--source", "cloud:offsite", "--verify"],
        &["-v", "restore", "--source", "external", "--verify"],
        &["ls", "--source", "cloud:offsite", "--recursive"],
        &["--json", "ls", "--source", "external", "--recursive"],
        &["find", "--source", "cloud", "a.txt"],
        &["--json", "find", "a.txt"],
        &["status"],
        &["--json", "status", "--history", "5"],
        &["status", "--check"],
        &["report", "--out", &r(&t.path("page.html"))],
        &["--json", "report"],
        &["report", "--drive", &r(&t.path("drive")), "--out", "-"],
        &["-vv", "cloud", "check", "offsite"],
        &["--json", "cloud", "check", "envoff", "--object-lock"],
        &["--dry-run", "cloud", "check", "offsite"],
        &["cloud", "check", "b2"],
        &["--json", "cloud", "check", "gone"],
        &["systemd", "render", "--user"],
        &[
            "systemd", "render", "--system", "--run-as", "nobody", "--format", "json",
        ],
        &["image", "kit"],
        &["--dry-run", "keygen"],
    ] {
        run(args);
    }
    for (mode, source, into) in [
        ("-vv", "external", "drive"),
        ("-vv", "cloud:offsite", "offsite"),
        ("--json", "cloud:envoff", "envoff"),
        ("--dry-run", "cloud:offsite", "dry"),
    ] {
        let into = restored(into);
        run(&[
            mode, "restore", "--source", source, "--path", &docs, "--target", &into,
        ]);
    }
    assert!(
        s3.list("laptop/backups/")
            .iter()
            .any(|(k, _)| k.ends_with("/backup.json")),
        "the sweep uploaded nothing: {printed:#?}"
    );

    // `serve`: the page and the JSON.
    let (mut child, addr) = crate::report::serve(&t, &[]);
    for path in ["/", "/status.json"] {
        let (_, head, body) = crate::report::http(&addr, "GET", path, &addr);
        printed.push((format!("serve {path}"), format!("{head}\n{body}")));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Every object on the bucket, while it still answers.
    let objects: Vec<(String, String)> = s3
        .list("")
        .into_iter()
        .map(|(key, _)| {
            let text = String::from_utf8_lossy(&s3.get(&key)).into_owned();
            (format!("object {key}"), text)
        })
        .collect();
    assert!(objects.len() > 4, "{objects:?}");

    // Errors on purpose.
    let mut run = |cmd: Cmd, args: &[&str]| {
        let out = cmd.args(args).output();
        printed.push((
            format!("dbackup {}", args.join(" ")),
            format!("{}\n{}", out.stdout, out.stderr),
        ));
    };
    let (other, pass) = (r(&other_identity), r(&pass_file));
    for identity in [&other, &pass] {
        run(
            t.cmd(),
            &[
                "restore",
                "--source",
                "external",
                "--identity",
                identity,
                "--path",
                &docs,
                "--target",
                &restored("x"),
            ],
        );
    }
    run(
        t.cmd().env("DBACKUP_PASSPHRASE_FILE", &wrong_pass),
        &[
            "-v",
            "restore",
            "--source",
            "cloud:offsite",
            "--path",
            &docs,
            "--target",
            &restored("wrong"),
        ],
    );
    fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = MKwrongsecret0123456789abcdef\n",
            g.key.id
        ),
    )
    .unwrap();
    run(t.cmd(), &["-vv", "cloud", "check", "offsite"]);
    run(t.cmd(), &["-vv", "external", "--destination", "offsite"]);
    run(
        t.cmd(),
        &["--json", "restore", "--list", "--source", "cloud:offsite"],
    );
    g.kill();
    run(t.cmd(), &["-vv", "external", "--destination", "envoff"]);
    run(t.cmd(), &["--json", "cloud", "check", "envoff"]);
    run(
        t.cmd(),
        &[
            "-v",
            "restore",
            "--source",
            "cloud:envoff",
            "--path",
            &docs,
            "--target",
            &restored("killed"),
        ],
    );
    run(t.cmd(), &["-v", "backup", "--force"]);

    // Everything it wrote: the backup root, the drive, the state (run log, pages, caches), restores, events.
    let mut places = printed;
    places.extend(objects);
    places.extend(files_under(
        t.dir.path(),
        &[&t.path("secrets"), &t.path("config.json"), &t.home()],
    ));
    places.extend(
        received
            .lock()
            .unwrap()
            .iter()
            .map(|r| ("the http sink".to_string(), r.clone())),
    );
    assert!(
        fs::read_to_string(&events).is_ok_and(|e| e.contains("\"kind\":\"failure\"")),
        "the command sink got no failure event"
    );
    assert!(
        !received.lock().unwrap().is_empty(),
        "the http sink got no event"
    );
    let found = leaks(&places, &secrets);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

/// A secret put where the config expects something else: `"passphrase": "<the passphrase>"` (it takes `true`), the
/// passphrase itself as `passphrase_file` (a relative path, or one with an unset `$...` in it), a
/// secret age identity as `"recipients": "AGE-SECRET-KEY-1..."` (a string, not a list), a notification `command` or
/// `desktop` given a URL with user info and token. `config check` refuses each (exit 2) and says where, without
/// quoting the secret or the URL's secret parts (the URL is shown as `https://ntfy.sh/***`). Before: each error
/// quoted the value whole ("expected true or false, found \"MK-...\""; "for one item write [\"AGE-SECRET-KEY-...\"]").
#[test]
fn a_secret_misplaced_in_the_config_is_not_quoted_by_its_error() {
    let sets =
        r#""backup_root": "{root}", "backup_sets": [ { "name": "docs", "sources": ["{home}"] } ]"#;
    let cases = [
        (
            r#""encryption": { "passphrase": "MK-passphrase-in-config" }"#,
            "/encryption/passphrase: expected true or false, found a string",
        ),
        (
            r#""encryption": { "passphrase": true, "passphrase_file": "MK-passphrase pa$$word" }"#,
            "/encryption/passphrase_file: cannot be used as the path of a file (the value is not shown",
        ),
        (
            r#""encryption": { "passphrase": true, "passphrase_file": "MK-passphrase-in-the-file-key" }"#,
            "/encryption/passphrase_file: cannot be used as the path of a file (the value is not shown",
        ),
        (
            r#""encryption": { "recipients": "AGE-SECRET-KEY-1MKSECRETIDENTITY" }"#,
            "/encryption/recipients: expected a list of strings, found a string",
        ),
        (
            r#""notifications": { "command": "curl -d @- https://MKuser:MKpw@ntfy.sh/MKtopic?token=MKtok" }"#,
            "/notifications/command: expected a list of strings, found \"curl -d @- https://ntfy.sh/***\"; for one \
             item write it in brackets, [\"...\"]",
        ),
        (
            r#""notifications": { "desktop": "https://MKuser:MKpw@ntfy.sh/MKtopic?token=MKtok" }"#,
            "/notifications/desktop: expected true or false, found \"https://ntfy.sh/***\"",
        ),
    ];
    for (extra, says) in cases {
        let t = Test::new().config(&format!("{{ {sets}, {extra} }}"));
        for args in [
            &["config", "check"][..],
            &["--json", "config", "check"],
            &["collect"],
        ] {
            let out = t.cmd().args(args).status(2);
            out.stderr_has(says);
            for secret in [
                "MK-passphrase",
                "MKSECRET",
                "MKuser",
                "MKpw",
                "MKtopic",
                "MKtok",
            ] {
                out.stderr_lacks(secret).stdout_lacks(secret);
            }
        }
    }
}

/// Notification URLs as users write them, not as RFC 3986 wants them: a password holding `#`, `?` or `/` (not
/// percent-encoded), and an apprise URL handed to the `command` sink, whose first part is a token (`tgram://<bot
/// token>/<chat>`, `ntfys://<topic>`, `pover://<user>@<token>`). `config check` (text and JSON) shows none of those
/// secrets: an http URL whose host cannot be told for sure is `https://***`, any other scheme only `tgram://***`.
/// Before: `https://MKuser:MKp/***` (the user and the password's start, read as a host) and `tgram://MKbottoken/***`.
#[test]
fn notification_urls_with_odd_passwords_or_tokens_as_hosts_are_not_shown() {
    let sets =
        r#""backup_root": "{root}", "backup_sets": [ { "name": "docs", "sources": ["{home}"] } ]"#;
    for (http, shown) in [
        ("https://MKuser:MKp#ss@ntfy.sh/MKtopic", "POST https://***"),
        ("https://MKuser:MKp?ss@ntfy.sh/MKtopic", "POST https://***"),
        ("https://MKuser:MKp/ss@ntfy.sh/MKtopic", "POST https://***"),
        ("https://ntfy.sh:MKport/MKtopic", "POST https://***"),
        (
            "https://MKuser:MKpw@ntfy.sh:8443/MKtopic",
            "POST https://ntfy.sh:8443/***",
        ),
    ] {
        let t = Test::new().config(&format!(
            r#"{{ {sets}, "notifications": {{ "http": "{http}",
                  "command": ["apprise", "-b", "x", "tgram://MKbottoken/MKchat", "ntfys://MKntfytopic",
                              "pover://MKpouser@MKpotoken"] }} }}"#
        ));
        for args in [&["config", "check"][..], &["--json", "config", "check"]] {
            let out = t.cmd().args(args).status(0);
            for secret in [
                "MKuser",
                "MKp",
                "MKtopic",
                "MKbottoken",
                "MKchat",
                "MKntfytopic",
                "MKpo",
            ] {
                out.stdout_lacks(secret).stderr_lacks(secret);
            }
            out.stdout_has("tgram://***");
        }
        t.cmd()
            .args(["config", "check"])
            .status(0)
            .stdout_has(shown);
    }
}

/// The `command` sink as ntfy's and curl's documentation write it, with the credentials as arguments of their own:
/// `curl -H "Authorization: Bearer <token>"`, `curl -u user:password`, `ntfy publish --token <token>`,
/// `--password=<password>`. `config check` (text and JSON) and a failed delivery's warning and run log show each
/// value as `***`. Before: every argument but a URL's secret parts was shown as written.
#[test]
fn credentials_among_a_notification_commands_arguments_are_not_shown() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "docs", "sources": ["{home}/docs"] } ],
             "notifications": { "events": ["success"], "command": ["/bin/sh", "-c", "exit 3", "sh",
               "-H", "Authorization: Bearer tk_MKbearer", "-u", "MKuser:MKpw", "--token", "tk_MKtoken",
               "--password=MKpassword", "--header=authorization: Basic MKbasic", "https://ntfy.sh/MKtopic"] } }"#,
    );
    t.write("home/docs/a", "x");
    let clean = |what: &str, text: &str| {
        for s in [
            "MKbearer",
            "MKuser",
            "MKpw",
            "MKtoken",
            "MKpassword",
            "MKbasic",
            "MKtopic",
        ] {
            assert!(!text.contains(s), "{what} shows {s:?}:\n{text}");
        }
    };
    t.cmd().args(["config", "check"]).status(0).stdout_has(
        "-H Authorization: *** -u *** --token *** --password=*** --header=authorization: *** https://ntfy.sh/***",
    );
    crate::process::command_sink_shown(&t, clean);
}

/// A secret dbackup reads though the config does not name it, kept in the backed-up home: the file, what the
/// "left out" line calls it, and a marker only its content holds.
struct Unnamed {
    path: std::path::PathBuf,
    called: String,
    marker: String,
}

impl Unnamed {
    /// The file `rel` (mode 0600) holding `content`, which holds `marker`.
    fn write(t: &Test, rel: &str, content: &str, called: &str, marker: &str) -> Unnamed {
        assert!(content.contains(marker));
        Unnamed {
            path: t.write_secret(rel, content),
            called: called.to_string(),
            marker: marker.to_string(),
        }
    }

    /// Where the snapshot (and so the archive) holds it: its path without the leading `/`.
    fn in_archive(&self) -> String {
        self.path
            .display()
            .to_string()
            .trim_start_matches('/')
            .to_string()
    }
}

/// The passphrase file `$DBACKUP_PASSPHRASE_FILE` names, in `~/.config/dbackup` (the test sets the variable).
fn env_passphrase(t: &Test) -> Unnamed {
    Unnamed::write(
        t,
        "home/.config/dbackup/passphrase",
        "MK-envpass-staple-battery-3317\n",
        "the passphrase file $DBACKUP_PASSPHRASE_FILE names",
        "MK-envpass-staple",
    )
}

/// The `safe` drive (a directory of the test, passphrase-encrypted), then `others`, backing up the whole home.
fn home_config(t: &Test, others: &str) -> String {
    std::fs::create_dir_all(t.path("safe")).unwrap();
    t.write("home/docs/todo.txt", "buy milk\n");
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["~"] }} ],
             "external": {{ "mode": "all" }},
             "destinations": [ {{ "name": "safe", "path": "{{tmp}}/safe", "require_mount": false,
                                  "encryption": {{ "passphrase": true }} }}, {others} ] }}"#
    )
}

/// What a plain destination `dest`'s dry run or run printed (`said`) names each of `secrets` left out, once.
#[track_caller]
fn says_left_out(said: &str, dest: &str, secrets: &[Unnamed]) {
    for s in secrets {
        let line = format!(
            "left out of {dest}: {}, {}; this destination is not encrypted",
            s.path.display(),
            s.called
        );
        assert_eq!(said.matches(&line).count(), 1, "{line:?} in:\n{said}");
    }
    assert!(!said.contains("left out of safe"), "{said}");
}

/// `tar -tf` of `archive`, which must list `home/docs/todo.txt` (so the listing is read) and none of `secrets`.
#[track_caller]
fn archive_lists_none_of(archive: &Path, secrets: &[Unnamed]) {
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tf {}", archive.display());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("/docs/todo.txt"), "{listing}");
    for s in secrets {
        assert!(
            !listing
                .lines()
                .any(|l| l.trim_end_matches('/') == s.in_archive()),
            "{} is in {}:\n{listing}",
            s.in_archive(),
            archive.display()
        );
    }
}

/// The encrypted `safe` drive keeps every one of `secrets`: restored from it, each comes back whole.
#[track_caller]
fn safe_keeps(t: &Test, secrets: &[Unnamed]) {
    let out = t.path("restored-safe");
    t.restore_drive(&t.path("safe"))
        .args(["--all", "--target"])
        .args([&out])
        .status(0);
    for s in secrets {
        let kept = out.join(s.in_archive());
        assert_eq!(fs::read(&kept).unwrap(), fs::read(&s.path).unwrap());
    }
}

/// What people and programs read of this world (`--json` status, the status page, the run log and every other file
/// under the state directory, and `printed`) holds none of the secrets' contents.
#[track_caller]
fn shown_nowhere(t: &Test, mut printed: Vec<(String, String)>, secrets: &[Unnamed]) {
    for args in [
        &["--json", "status"][..],
        &["status"],
        &["report", "--out", "-"],
    ] {
        let out = t.cmd().args(args).output();
        printed.push((
            format!("dbackup {}", args.join(" ")),
            format!("{}\n{}", out.stdout, out.stderr),
        ));
    }
    printed.extend(files_under(&t.path("state"), &[]));
    let markers: Vec<String> = secrets.iter().map(|s| s.marker.clone()).collect();
    let found = leaks(&printed, &markers);
    assert!(found.is_empty(), "secrets shown:\n{}", found.join("\n"));
}

/// Secrets dbackup reads that the config does not name, in the backed-up home: the passphrase file
/// `$DBACKUP_PASSPHRASE_FILE` names (read to encrypt the `safe` drive), and the AWS shared credentials and config files
/// an s3 destination without `credentials_file` takes its keys from (`$AWS_SHARED_CREDENTIALS_FILE`, here in
/// `~/.config/aws`; `$AWS_CONFIG_FILE` unset, so `~/.aws/config`). The plain drive's archive lists none of them
/// (`tar -tf`) and no file on the drive holds their contents; the dry run (text and JSON) and the run say each is left
/// out; the encrypted drive keeps them; nothing printed or logged shows their contents. Before: all three went to the
/// plain drive in plaintext.
#[test]
fn secrets_the_config_does_not_name_stay_off_a_plain_drive() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("plain")).unwrap();
    let secrets = [
        env_passphrase(&t),
        Unnamed::write(
            &t,
            "home/.config/aws/credentials",
            "[default]\naws_access_key_id = GKMKsharedid\naws_secret_access_key = MKsharedsecret0042\n",
            "the AWS shared credentials file of destination offsite ($AWS_SHARED_CREDENTIALS_FILE)",
            "MKsharedsecret0042",
        ),
        Unnamed::write(
            &t,
            "home/.aws/config",
            "[profile other]\naws_access_key_id = GKMKconfigid\naws_secret_access_key = MKconfigsecret0042\n",
            "the AWS config file of destination offsite",
            "MKconfigsecret0042",
        ),
    ];
    let others = format!(
        r#"{{ "name": "plain", "path": "{{tmp}}/plain", "require_mount": false }},
           {{ "name": "offsite", "kind": "s3", "endpoint": "http://127.0.0.1:{}", "bucket": "bkt", "region": "{REGION}",
             "allow_unencrypted": true, "retries": 1, "timeout_seconds": 5 }}"#,
        closed_port()
    );
    let config = home_config(&t, &others);
    let t = t
        .config(&config)
        .env("DBACKUP_PASSPHRASE_FILE", &secrets[0].path)
        .env("AWS_SHARED_CREDENTIALS_FILE", &secrets[1].path);
    t.cmd().args(["collect"]).status(0);

    let mut printed = Vec::new();
    let plan = t
        .cmd()
        .args(["--dry-run", "external", "--destination", "plain"])
        .status(0);
    says_left_out(&plan.stdout, "plain", &secrets);
    let json = t
        .cmd()
        .args(["--json", "--dry-run", "external", "--destination", "plain"])
        .status(0);
    let value: serde_json::Value = json.json();
    crate::json::assert_valid("external-plan", &value);
    let listed: Vec<&str> = (value["sets"][0]["secrets"].as_array().unwrap().iter())
        .filter_map(|s| s["path"].as_str())
        .collect();
    for s in &secrets {
        assert!(listed.contains(&s.path.to_str().unwrap()), "{value:#}");
    }
    let run = t
        .cmd()
        .args(["external", "--destination", "plain"])
        .status(0);
    says_left_out(&run.stderr, "plain", &secrets);
    let safe = t
        .cmd()
        .args(["external", "--destination", "safe"])
        .status(0);
    assert!(!safe.stderr.contains("left out"), "{}", safe.stderr);
    for (what, out) in [
        ("plan", &plan),
        ("json plan", &json),
        ("run", &run),
        ("safe", &safe),
    ] {
        printed.push((what.to_string(), format!("{}\n{}", out.stdout, out.stderr)));
    }

    let on_plain = files_under(&t.path("plain"), &[]);
    let archive = (on_plain.iter())
        .find(|(p, _)| p.ends_with("/docs.tar"))
        .map(|(p, _)| std::path::PathBuf::from(p))
        .expect("the plain drive holds docs.tar");
    archive_lists_none_of(&archive, &secrets);
    let markers: Vec<String> = secrets.iter().map(|s| s.marker.clone()).collect();
    let found = leaks(&on_plain, &markers);
    assert!(
        found.is_empty(),
        "on the plain drive:\n{}",
        found.join("\n")
    );
    assert!(
        !leaks(&on_plain, &["buy milk".to_string()]).is_empty(),
        "the search works: the plain drive holds the home in the clear"
    );
    safe_keeps(&t, &secrets);
    shown_nowhere(&t, printed, &secrets);
}

/// A plain bucket on Garage whose keys dbackup reads from `~/.aws/credentials` (no `credentials_file`, none in the
/// environment), beside a drive encrypted to the passphrase `$DBACKUP_PASSPHRASE_FILE` names, both files in the
/// backed-up home with `~/.aws/config`: the bucket's archive (its parts joined) lists none of them (`tar -tf`), no
/// object holds their contents (the keys included), the dry run and the run say each is left out, the drive keeps
/// them, and nothing printed or logged shows their contents. Before: the bucket held all three in plaintext.
#[test]
fn secrets_the_config_does_not_name_stay_off_a_plain_bucket() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = Test::new();
    let secrets = [
        env_passphrase(&t),
        Unnamed::write(
            &t,
            "home/.aws/credentials",
            &format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                g.key.id, g.key.secret
            ),
            "the AWS shared credentials file of destination offsite",
            &g.key.secret,
        ),
        Unnamed::write(
            &t,
            "home/.aws/config",
            "[default]\nregion = garage\n# MKawsconfig-marker\n",
            "the AWS config file of destination offsite",
            "MKawsconfig-marker",
        ),
    ];
    let others = format!(
        r#"{{ "name": "offsite", "kind": "s3", "endpoint": "{}", "bucket": "{}", "region": "{REGION}",
             "prefix": "laptop", "allow_unencrypted": true, "retries": 1, "timeout_seconds": 10 }}"#,
        g.endpoint(),
        g.bucket
    );
    let config = home_config(&t, &others);
    let mut t = t
        .config(&config)
        .env("DBACKUP_PASSPHRASE_FILE", &secrets[0].path);
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE") {
        t = t.env("AWS_CA_BUNDLE", bundle);
    }
    t.cmd().args(["collect"]).status(0);

    let plan = t.cmd().args(["--dry-run", "external"]).status(0);
    says_left_out(&plan.stdout, "offsite", &secrets);
    let run = t.cmd().args(["--json", "external"]).status(0);
    says_left_out(&run.stderr, "offsite", &secrets);
    let printed = [("plan", &plan), ("run", &run)]
        .map(|(what, out)| (what.to_string(), format!("{}\n{}", out.stdout, out.stderr)))
        .to_vec();

    let objects: Vec<(String, Vec<u8>)> = (s3.list("laptop/").into_iter())
        .map(|(key, _)| {
            let bytes = s3.get(&key);
            (key, bytes)
        })
        .collect();
    let mut parts: Vec<&(String, Vec<u8>)> = (objects.iter())
        .filter(|(k, _)| k.contains("/docs.tar.part"))
        .collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        !parts.is_empty(),
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    let archive = t.path("docs.tar");
    fs::write(
        &archive,
        parts
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    archive_lists_none_of(&archive, &secrets);
    let texts: Vec<(String, String)> = (objects.iter())
        .map(|(k, b)| {
            (
                format!("object {k}"),
                String::from_utf8_lossy(b).into_owned(),
            )
        })
        .collect();
    let mut markers: Vec<String> = secrets.iter().map(|s| s.marker.clone()).collect();
    markers.push(g.key.id.clone());
    let found = leaks(&texts, &markers);
    assert!(found.is_empty(), "on the bucket:\n{}", found.join("\n"));
    assert!(
        !leaks(&texts, &["buy milk".to_string()]).is_empty(),
        "the search works: the bucket holds the home in the clear"
    );
    safe_keeps(&t, &secrets);
    shown_nowhere(&t, printed, &secrets);
}
