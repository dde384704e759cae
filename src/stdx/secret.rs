//! Secrets as messages may show them. A notification URL's user info, path and query are secrets (an ntfy topic is
//! a password, `?token=` is one): only its scheme and host are ever shown.

use super::show_str;

/// The parts of a URL: `(scheme, user info, host[:port], the rest)`; without `://`, the scheme is empty. The host
/// is empty when it cannot be told for sure, so that nothing secret is ever taken for one: any scheme but http and
/// https (an apprise URL's first part is often a token: `tgram://<bot token>/<chat>`, `ntfys://<topic>`), an `@`
/// after the first `/`, `?` or `#` (a password holding one of those, not percent-encoded), or a port that is not a
/// number. Then the rest is all of it.
fn split(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let web = scheme.is_empty()
        || scheme.eq_ignore_ascii_case("http")
        || scheme.eq_ignore_ascii_case("https");
    let port_ok = match host.rsplit_once(':') {
        // An IPv6 address's colons are inside its brackets.
        Some((name, port)) if !port.contains(']') => {
            !name.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
        _ => true,
    };
    if !web || tail.contains('@') || !port_ok {
        return (scheme, "", "", rest);
    }
    (scheme, user, host, tail)
}

/// A URL as every message, listing and log shows it: `https://user:pw@ntfy.sh/topic?token=x` ->
/// `https://ntfy.sh/***`. Scheme and host (with its port) stay; user info, path, query and fragment become `***`;
/// a URL whose host cannot be told for sure (see [`split`]) keeps only its scheme (`tgram://***`).
/// Something that is not a URL keeps only what would be its host (`ntfy.sh/topic` -> `ntfy.sh/***`).
pub fn redact_url(url: &str) -> String {
    let (scheme, user, host, tail) = split(url);
    let mut out = String::new();
    if !scheme.is_empty() || url.contains("://") {
        out.push_str(&show_str(scheme));
        out.push_str("://");
    }
    if host.is_empty() && !tail.is_empty() {
        out.push_str("***");
        return out;
    }
    out.push_str(&show_str(host));
    if !user.is_empty() || url[..url.len() - tail.len()].ends_with('@') || !tail.is_empty() {
        out.push_str("/***");
    }
    out
}

/// Options whose value is a credential (curl's `-u user:password`, ntfy's `--token`, ...): the next word, or what
/// follows `=`, is never shown.
const SECRET_OPTIONS: &[&str] = &[
    "-u",
    "--user",
    "--token",
    "--password",
    "--passwd",
    "--pass",
    "--auth",
    "--api-key",
    "--apikey",
];

/// A command line as every message, listing and log shows it: each URL in it (a word, or the end of one, as in
/// `--url=https://...` or `sh -c 'curl https://...'`) as [`redact_url`] shows it, with whatever follows it in that
/// word; the value of a credential option ([`SECRET_OPTIONS`]) as `***`, and of an `Authorization:` header (`-H
/// "Authorization: Bearer tk_..."`, also inside a `sh -c` script) as `Authorization: ***`. A URL handed to a
/// notification command is as secret as the `http` sink's.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let secret_option = |w: &str| SECRET_OPTIONS.contains(&w.to_ascii_lowercase().as_str());
    let mut out: Vec<String> = Vec::with_capacity(argv.len());
    for word in argv {
        if out.last().is_some_and(|previous| secret_option(previous)) {
            out.push("***".into());
            continue;
        }
        if let Some((option, _)) = word.split_once('=')
            && secret_option(option)
        {
            out.push(format!("{option}=***"));
            continue;
        }
        let word = blank_authorization(word);
        let Some(at) = word.find("://") else {
            out.push(word);
            continue;
        };
        let start = word[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        out.push(format!("{}{}", &word[..start], redact_url(&word[start..])));
    }
    out
}

/// `word` with the value of every `Authorization:` header in it (up to a quote or the line's end) as `***`.
fn blank_authorization(word: &str) -> String {
    const HEADER: &str = "authorization:";
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.to_ascii_lowercase().find(HEADER) {
        let start = at + HEADER.len();
        let end = rest[start..]
            .find(['"', '\'', '\n'])
            .map_or(rest.len(), |i| start + i);
        out.push_str(&rest[..start]);
        out.push_str(" ***");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` (an error message from the HTTP client) with every secret part of `url` it quotes replaced:
/// the whole URL by [`redact_url`], its user info and its path and query by `***`.
pub fn redact_url_in(text: &str, url: &str) -> String {
    let (_, user, _, tail) = split(url);
    let mut out = text.replace(url, &redact_url(url));
    for secret in [user, tail] {
        // One character (`/`) is no secret, and replacing it would garble the message.
        if secret.len() > 1 {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// The warning for a key file (`what`: "identity file", "passphrase file") that users other than its owner can read
/// (its group, or anyone), as ssh warns about a private key: its path, mode and the fix, never its contents.
pub fn key_file_exposed(path: &std::path::Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the {what} {} can be read by other users (mode {mode:04o}): anyone who can read it can decrypt the \
             backups encrypted with it; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// Whether `text` holds a secret key: an age identity (`AGE-SECRET-KEY-1...`) or a PEM private key, in any case.
/// Such text is never quoted, not even in part.
pub fn holds_secret_key(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    upper.contains("AGE-SECRET-KEY-") || upper.contains("PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_and_host_are_shown() {
        for (url, shown) in [
            ("https://ntfy.sh/my-topic", "https://ntfy.sh/***"),
            (
                "https://user:pass@ntfy.example.org:8443/t?token=abc#x",
                "https://ntfy.example.org:8443/***",
            ),
            ("http://127.0.0.1:9/?token=abc", "http://127.0.0.1:9/***"),
            ("https://ntfy.sh?token=abc", "https://ntfy.sh/***"),
            ("https://ntfy.sh", "https://ntfy.sh"),
            ("https://tok@ntfy.sh", "https://ntfy.sh/***"),
            ("ntfy.sh/topic", "ntfy.sh/***"),
            ("https://h\x1b[2J/x", "https://h\\x1b[2J/***"),
            ("http://[::1]:8080/t", "http://[::1]:8080/***"),
            // A password holding `#`, `?` or `/`: the host cannot be told, so none is shown.
            ("https://u:p#ss@ntfy.sh/t", "https://***"),
            ("https://u:p?ss@ntfy.sh/t", "https://***"),
            ("https://u:p/ss@ntfy.sh/t", "https://***"),
            ("https://ntfy.sh:tok/t", "https://***"),
            // Other schemes (apprise): the first part is often a token.
            ("tgram://bottoken/chat", "tgram://***"),
            ("ntfys://topic", "ntfys://***"),
            ("pover://user@token", "pover://***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_in_a_command_line_are_redacted() {
        let argv: Vec<String> = [
            "curl",
            "https://u:pw@ntfy.sh/topic",
            "--url=http://h:8/t?token=x",
            "curl -d @- https://ntfy.sh/topic && echo ok",
            "tgram://bottoken/chat",
            "plain",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            redact_argv(&argv),
            [
                "curl",
                "https://ntfy.sh/***",
                "--url=http://h:8/***",
                "curl -d @- https://ntfy.sh/***",
                "tgram://***",
                "plain"
            ]
        );
    }

    #[test]
    fn credential_options_and_authorization_headers_are_redacted() {
        let argv: Vec<String> = [
            "curl",
            "-u",
            "user:pw",
            "--TOKEN=tk_1",
            "-H",
            "Authorization: Bearer tk_2",
            "sh -c 'curl -H \"authorization: Basic abc\" -d @- https://ntfy.sh/t' x",
            "-v",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            redact_argv(&argv),
            [
                "curl",
                "-u",
                "***",
                "--TOKEN=***",
                "-H",
                "Authorization: ***",
                "sh -c 'curl -H \"authorization: ***\" -d @- https://ntfy.sh/***",
                "-v"
            ]
        );
    }

    #[test]
    fn quoted_secrets_are_replaced_in_messages() {
        let url = "https://u:pw@ntfy.sh/secret-topic?token=abc";
        assert_eq!(
            redact_url_in(&format!("POST to {url} failed"), url),
            "POST to https://ntfy.sh/*** failed"
        );
        assert_eq!(
            redact_url_in("error at /secret-topic?token=abc (u:pw)", url),
            "error at *** (***)"
        );
        assert_eq!(redact_url_in("a/b", "https://h/"), "a/b");
    }
}
