//! The brief's "secrets appear in no output, log, store path or object", swept across every command: one world that
//! holds every kind of secret dbackup can be given (an age identity, a passphrase file, s3 keys in a credentials file
//! and in the environment with a session token, b2 keys, notification URLs with user info, topic and `?token=`),
//! each a distinctive marker; every command run in its modes (`--json`, `--dry-run`, `-v`, `-vv`) and its errors on
//! purpose (wrong key, wrong identity, wrong passphrase, server killed, closed port); then stdout, stderr, every file
//! dbackup wrote (backup root, drive, state, pages), the bucket's objects, `serve`'s answers, the rendered units and
//! the notifications' bodies are searched for the markers.

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
