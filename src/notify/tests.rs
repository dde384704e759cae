//! The sinks against real programs and a real HTTP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use super::sinks::{self, Env, Sink};
use super::*;

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

/// A one-request HTTP server on 127.0.0.1 answering `status`; returns its URL and what it received.
fn server(status: u16) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dbackup-topic", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        .unwrap();
        let _ = tx.send(Request {
            line: line.trim_end().to_string(),
            headers,
            body: String::from_utf8(body).unwrap(),
        });
    });
    (url, rx)
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
    let d = Sink::Http {
        url: url.clone(),
        curl: None,
    }
    .deliver(&e);
    assert_eq!(d.outcome, Outcome::Sent, "{d:?}");
    assert_ntfy_request(&received(&rx), &e);
}

#[test]
fn http_posts_the_same_through_curl() {
    let Some(curl) = Env::from_process().find("curl") else {
        return crate::stdx::skip::skip("curl is not installed");
    };
    let (url, rx) = server(200);
    let e = event(EventKind::MissingMedia);
    assert_eq!(sinks::http_curl(&curl, &url, &e), Ok(()));
    assert_ntfy_request(&received(&rx), &e);

    let (url, rx) = server(404);
    let r = sinks::http_curl(&curl, &url, &e);
    let m = r.unwrap_err();
    assert!(m.contains("(curl): exited with 22"), "{m}");
    let _ = received(&rx);
}

#[test]
fn http_failures_are_deliveries_not_errors() {
    let (url, rx) = server(500);
    let d = Sink::Http { url, curl: None }.deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    let m = d.message.unwrap();
    assert!(m.ends_with("answered HTTP 500"), "{m}");
    let _ = received(&rx);

    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Sink::Http {
        url: format!("http://user:secret@127.0.0.1:{port}/x"),
        curl: None,
    }
    .deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    let m = d.message.unwrap();
    assert!(
        m.starts_with(&format!("POST to http://127.0.0.1:{port}/***: ")),
        "{m}"
    );
    assert!(!m.contains("secret"), "{m}");

    let d = Sink::Http {
        url: "https://ntfy.example/x".into(),
        curl: None,
    }
    .deliver(&event(EventKind::Failure));
    assert_eq!(d.outcome, Outcome::Failed);
    assert!(
        d.message
            .unwrap()
            .contains("https needs curl, which is not installed"),
    );
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
