//! The sinks against real programs and a real HTTP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use super::sinks::{self, Env, Sink};
use super::*;
use chrono::DateTime;

use crate::config::EventKind;

fn event(kind: EventKind) -> Event {
    Event::new(
        kind,
        "backup",
        "dbackup backup on host: the drive T9 is not present",
        "T9: not mounted: /media/payne/T9 is an empty directory on /; plug in the drive\nsecond line \"quoted\" \\ é",
        DateTime::parse_from_rfc3339("2025-04-10T09:00:00+02:00").unwrap(),
    )
}

/// A request as the server saw it.
#[derive(Debug)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP request from `stream` and answers `status`; `None` when the client went away first (a TLS
/// client that refused the certificate).
fn answer<S: Read + Write>(mut stream: S, status: u16) -> Option<Request> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    .ok()?;
    stream.flush().ok()?;
    Some(Request {
        line: line.trim_end().to_string(),
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

/// A one-request HTTP server on 127.0.0.1 answering `status`; returns its URL and what it received.
fn server(status: u16) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dbackup-topic", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        if let Some(r) = answer(stream, status) {
            let _ = tx.send(r);
        }
    });
    (url, rx)
}

/// A one-request HTTPS server on 127.0.0.1 (rustls), whose certificate for 127.0.0.1 is signed by a certificate
/// authority made here; returns its URL, the authority's certificate (DER) and what it received.
fn tls_server(status: u16) -> (String, Vec<u8>, mpsc::Receiver<Request>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/dbackup-topic", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        if let Some(r) = answer(rustls::StreamOwned::new(conn, tcp), status) {
            let _ = tx.send(r);
        }
    });
    (url, ca.der().to_vec(), rx)
}

fn received(rx: &mpsc::Receiver<Request>) -> Request {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the server got a request")
}

#[track_caller]
fn assert_ntfy_request(r: &Request, e: &Event) {
    assert_eq!(r.line, "POST /dbackup-topic HTTP/1.1");
    assert_eq!(
        r.header("title"),
        Some(format!("dbackup on {}: missing media", e.host).as_str())
    );
    assert_eq!(r.header("priority"), Some("default"));
    assert_eq!(r.header("tags"), Some("floppy_disk,dbackup"));
    assert_eq!(r.header("x-dbackup-event"), Some("missing_media"));
    assert_eq!(r.body, format!("{}\n\n{}", e.summary, e.details));
}

#[test]
fn http_posts_ntfy_style_through_ureq() {
    let (url, rx) = server(200);
    let e = event(EventKind::MissingMedia);
    let d = Sink::Http { url: url.clone() }.deliver(&e);
    assert_eq!(d.outcome, Outcome::Sent, "{d:?}");
    assert_ntfy_request(&received(&rx), &e);
}

/// https goes through ureq and rustls inside dbackup: the same request reaches a TLS server on 127.0.0.1 whose
/// certificate chains to a trusted authority, with no program on `PATH` (main ran `curl` from `PATH` for https,
/// which the Nix package's wrapper did not provide, so https notifications failed from the units).
#[test]
fn https_posts_the_same_through_rustls_with_nothing_on_path() {
    let (url, ca, rx) = tls_server(200);
    let config = Notifications {
        http: Some(url.clone()),
        ..Notifications::default()
    };
    let nothing = Env {
        session_bus: false,
        path: Some(std::ffi::OsString::new()),
    };
    assert_eq!(
        sinks::configured(&config, &nothing),
        [Sink::Http { url: url.clone() }]
    );
    assert!(sinks::programs(&config).is_empty());
    let e = event(EventKind::MissingMedia);
    let roots =
        ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca).to_owned()]);
    assert_eq!(sinks::post(&url, &e, roots, sinks::HTTP_TIMEOUT), Ok(()));
    assert_ntfy_request(&received(&rx), &e);
}

/// The certificate is checked: with the roots the binary carries (Mozilla's), a server whose authority is not
/// among them is refused, and nothing is sent.
#[test]
fn https_refuses_a_certificate_no_known_authority_signed() {
    let (url, _ca, rx) = tls_server(200);
    let d = Sink::Http { url: url.clone() }.deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed, "{d:?}");
    let m = d.message.unwrap();
    assert!(
        m.starts_with(&format!("POST to {}: ", sinks::redact(&url))),
        "{m}"
    );
    assert!(m.to_lowercase().contains("certificate"), "{m}");
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err());
}

/// The programs the enabled sinks start, which the units must find on their `PATH`.
#[test]
fn programs_are_what_the_enabled_sinks_start() {
    assert!(sinks::programs(&Notifications::default()).is_empty());
    let config = Notifications {
        desktop: true,
        command: Some(vec!["logger".into(), "-t".into(), "dbackup".into()]),
        http: Some("https://ntfy.sh/x".into()),
        ..Notifications::default()
    };
    assert_eq!(sinks::programs(&config), ["notify-send", "logger"]);
}

#[test]
fn http_failures_are_deliveries_not_errors() {
    let (url, rx) = server(500);
    let d = Sink::Http { url }.deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    let m = d.message.unwrap();
    assert!(m.ends_with("answered HTTP 500"), "{m}");
    let _ = received(&rx);

    // Nothing listens on a closed port (kept bound, so no server can take it meanwhile).
    let port = testkit::objstore::closed_port();
    let d = Sink::Http {
        url: format!("http://user:secret@127.0.0.1:{port}/x"),
    }
    .deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    let m = d.message.unwrap();
    assert!(
        m.starts_with(&format!("POST to http://127.0.0.1:{port}/***: ")),
        "{m}"
    );
    assert!(!m.contains("secret"), "{m}");

    // https to nothing: a failed delivery too, the secret left out.
    let d = Sink::Http {
        url: format!("https://user:secret@127.0.0.1:{port}/x"),
    }
    .deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    let m = d.message.unwrap();
    assert!(!m.contains("secret"), "{m}");
}

#[test]
fn commands_get_the_event_in_env_and_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "cat > {0}.json; printf '%s\\n%s\\n%s' \"$DBACKUP_EVENT\" \"$DBACKUP_SUMMARY\" \"$DBACKUP_DETAILS\" > {0}.env; echo noise",
        out.display()
    );
    let e = event(EventKind::MissingMedia);
    let d = Sink::Command {
        argv: vec!["sh".into(), "-c".into(), script],
    }
    .deliver(&e);
    assert_eq!(d.outcome, Outcome::Sent, "{d:?}");
    let json: Event =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(json, e);
    assert_eq!(
        std::fs::read_to_string(out.with_extension("env")).unwrap(),
        format!("missing_media\n{}\n{}", e.summary, e.details)
    );
}

#[test]
fn failing_commands_say_why() {
    let e = event(EventKind::Warning);
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let d = Sink::Command {
        argv: argv("echo 'mail: no route' >&2; exit 3"),
    }
    .deliver(&e);
    assert_eq!(d.outcome, Outcome::Failed);
    assert_eq!(
        d.message.as_deref(),
        Some("sh -c 'echo '\\''mail: no route'\\'' >&2; exit 3': exited with 3: mail: no route")
    );

    let d = Sink::Command {
        argv: vec!["/nonexistent/notifier".into()],
    }
    .deliver(&e);
    assert_eq!(d.outcome, Outcome::Failed);
    assert!(
        d.message
            .as_deref()
            .unwrap()
            .starts_with("/nonexistent/notifier: cannot run it: "),
        "{d:?}"
    );

    // A command that ignores its stdin and exits at once is fine.
    let d = Sink::Command {
        argv: vec!["true".into()],
    }
    .deliver(&e);
    assert_eq!(d.outcome, Outcome::Sent);

    let started = std::time::Instant::now();
    let r = sinks::command(&argv("sleep 10"), &e, Duration::from_millis(300));
    assert_eq!(
        r,
        Err("sh -c 'sleep 10': did not finish within 0.3s and was killed".to_string())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// An event larger than a pipe holds (64 KiB: many sets, long rsync messages) given to a command that does not read
/// its stdin: the time limit still holds; and one larger than an environment variable may be (128 KiB) still reaches
/// a command, whole on stdin. Before: writing stdin blocked for ever, before the limit was counted; and the command
/// could not be started at all (`Argument list too long`).
#[test]
fn a_large_event_reaches_a_command_within_the_time_limit() {
    let large = |bytes: usize| {
        let mut e = event(EventKind::Failure);
        e.details = "collect data: FAILED: rsync said: ...\n".repeat(bytes / 38);
        e
    };
    let e = large(100 << 10);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(sinks::command(
            &["sleep".into(), "10".into()],
            &e,
            Duration::from_millis(300),
        ))
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the command sink returned");
    assert_eq!(
        r,
        Err("sleep 10: did not finish within 0.3s and was killed".to_string())
    );

    let e = large(1 << 20);
    let json = serde_json::to_string(&e).unwrap().len() + 1;
    let argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("test \"$(wc -c)\" = {json} && test -n \"$DBACKUP_DETAILS\""),
    ];
    assert_eq!(sinks::command(&argv, &e, Duration::from_secs(30)), Ok(()));
}

/// A hung receiver costs a run its time limit once, not once per event: a sink that used its whole limit and failed
/// is not tried for the run's later events (the other sinks still are). Before: each event waited the whole limit
/// again (a hung command: 60 s for each of up to four events).
#[test]
fn a_sink_that_hangs_is_tried_once_a_run() {
    let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let sinks = [
        Sink::Command {
            argv: sh("sleep 10"),
        },
        Sink::Command { argv: sh("exit 0") },
    ];
    let events = [
        event(EventKind::Failure),
        event(EventKind::LowDisk),
        event(EventKind::Overdue),
    ];
    let wanted: Vec<&Event> = events.iter().collect();
    // The hung sink gets 0.3 s; the other one all the time it needs (0.3 s to start a shell is too short on a loaded
    // machine, and it would be the one "hung" then).
    let d = deliver_all(&sinks, &wanted, |s| {
        if *s == sinks[0] {
            Duration::from_millis(300)
        } else {
            sinks::COMMAND_TIMEOUT
        }
    });
    let outcomes: Vec<Outcome> = d.iter().map(|d| d.outcome).collect();
    use Outcome::{Failed, Sent};
    assert_eq!(outcomes, [Failed, Sent, Failed, Sent, Failed, Sent]);
    assert_eq!(
        d[0].message.as_deref(),
        Some("sh -c 'sleep 10': did not finish within 0.3s and was killed")
    );
    for later in [&d[2], &d[4]] {
        assert_eq!(
            later.message.as_deref(),
            Some("not tried: it used its whole 0.3s for the failure notification and failed"),
            "{later:?}"
        );
    }
}

#[test]
fn desktop_notifications_need_a_session_and_notify_send() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("args");
    let fake = dir.path().join("notify-send");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = Notifications {
        desktop: true,
        ..Default::default()
    };
    let with_bus = Env {
        session_bus: true,
        path: Some(dir.path().as_os_str().to_owned()),
    };
    let sinks = sinks::configured(&config, &with_bus);
    assert_eq!(sinks, [Sink::Desktop { notify_send: fake }]);
    let e = event(EventKind::Failure);
    assert_eq!(sinks[0].deliver(&e).outcome, Outcome::Sent);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "--app-name=dbackup\n--urgency=critical\n--icon=drive-harddisk\n--\n{}\n{}\n",
            e.summary, e.details
        )
    );

    let no_bus = Env {
        session_bus: false,
        ..with_bus.clone()
    };
    let d = sinks::configured(&config, &no_bus)[0].deliver(&e);
    assert_eq!(d.outcome, Outcome::Skipped);

    let no_program = Env {
        session_bus: true,
        path: Some("/nonexistent".into()),
    };
    let d = sinks::configured(&config, &no_program)[0].deliver(&e);
    assert_eq!(d.outcome, Outcome::Failed);
    assert!(d.message.unwrap().contains("notify-send is not installed"));
}

#[test]
fn only_wanted_events_go_out() {
    let config = Notifications::default();
    let events = [
        event(EventKind::Success),
        event(EventKind::MissingMedia),
        event(EventKind::Overdue),
    ];
    let kinds: Vec<EventKind> = wanted(&config, &events).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::MissingMedia, EventKind::Overdue]);
    assert!(
        send(&config, &events).is_empty(),
        "no sink configured: nothing delivered"
    );
}

#[test]
fn urls_are_redacted_for_messages() {
    // User info, path and query are all secrets (an ntfy topic is a password).
    for (url, want) in [
        ("https://ntfy.sh/topic", "https://ntfy.sh/***"),
        (
            "https://user:tk_123@ntfy.example:8443/t?x=1",
            "https://ntfy.example:8443/***",
        ),
        ("http://a@b", "http://b/***"),
    ] {
        assert_eq!(sinks::redact(url), want);
    }
}
