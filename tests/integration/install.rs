//! What `cargo xtask install` and packagers install beside the binary: the man pages (`generate man`) and the shell
//! completions (`generate completions`), checked through the real binary and a real bash.

use std::path::Path;
use std::process::Command;

use crate::harness::{BIN, Test};

const CONFIG: &str = r#"{
  "backup_root": "{root}",
  "backup_sets": [
    { "name": "docs", "sources": ["{home}"] },
    { "name": "data", "sources": ["{home}"] },
    { "name": "config", "sources": ["{home}"] }
  ],
  "destinations": [ { "name": "T9", "path": "{tmp}/t9" }, { "name": "usb2", "path": "{tmp}/usb2" } ]
}"#;

/// What bash's TAB offers after `words` (the last one being completed, the cursor at its end), with the registration
/// script `dbackup generate completions bash` prints sourced, and `dbackup` found on PATH: the function it registers
/// is called as bash calls it, with the line split into `COMP_WORDS` as bash splits it (at blanks, and around each
/// run of `:` and `=`, which are in bash's `COMP_WORDBREAKS`). Returns the candidates and whatever the completion printed on
/// stderr.
fn bash_complete(t: &Test, words: &[&str], env: &[(&str, &str)]) -> (Vec<String>, String) {
    let script = t
        .cmd()
        .args(["generate", "completions", "bash"])
        .status(0)
        .stdout;
    let registration = t.write("dbackup.bash", script);
    let bin_dir = Path::new(BIN).parent().expect("the binary has a directory");
    let line = words.join(" ");
    let mut split: Vec<String> = Vec::new();
    for word in words {
        if word.is_empty() {
            split.push(String::new());
        }
        let mut rest = *word;
        while !rest.is_empty() {
            let breaks = rest.starts_with([':', '=']);
            let len = rest
                .find(|c| [':', '='].contains(&c) != breaks)
                .unwrap_or(rest.len());
            split.push(rest[..len].to_string());
            rest = &rest[len..];
        }
    }
    // After a `:` that ends the line bash completes the `:` word, and what it replaces (`$2`) is empty.
    let current = if line.ends_with([':', '=']) {
        ""
    } else {
        split.last().map_or("", String::as_str)
    };
    let quoted: Vec<String> = split.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_LINE='{line}'\nCOMP_POINT={}\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_TYPE=9\n\
         function=$(complete -p dbackup)\nfunction=${{function##*-F }}\nfunction=${{function%% *}}\n\
         \"$function\" dbackup '{current}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        registration.display(),
        line.len(),
        quoted.join(" "),
        split.len() - 1,
        split[split.len().saturating_sub(2)],
    );
    let mut bash = Command::new("bash");
    bash.arg("--noprofile")
        .arg("--norc")
        .arg("-c")
        .arg(program)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", t.home())
        .env("XDG_CONFIG_HOME", t.path("xdg-config"))
        .current_dir(t.dir.path());
    for (k, v) in env {
        bash.env(k, v);
    }
    let out = bash.output().expect("run bash");
    assert!(out.status.success(), "bash failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let candidates = stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (
        candidates,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dbackup collect --set <TAB>` in bash offers the config's set names (the one `--config` on the line names, else
/// `$DBACKUP_CONFIG`), `--destination <TAB>` its destinations, and a broken config offers nothing and prints nothing.
/// Before: the completion scripts were clap's static ones, which knew only flags and subcommands (`--set` completed
/// file names).
#[test]
fn bash_tab_offers_set_and_destination_names_from_the_config() {
    let t = Test::new().config(CONFIG);
    let config = t.path("config.json");
    let config = config.to_str().expect("a UTF-8 test path");

    let (sets, err) = bash_complete(
        &t,
        &["dbackup", "--config", config, "collect", "--set", "d"],
        &[],
    );
    assert_eq!(sets, ["docs", "data"], "stderr: {err}");
    assert_eq!(err, "");

    let (sets, _) = bash_complete(
        &t,
        &["dbackup", "ls", "--set", ""],
        &[("DBACKUP_CONFIG", config)],
    );
    assert_eq!(sets, ["docs", "data", "config"]);

    let (dests, _) = bash_complete(
        &t,
        &["dbackup", "external", "--destination", ""],
        &[("DBACKUP_CONFIG", config)],
    );
    assert_eq!(dests, ["T9", "usb2"]);

    // Subcommands still complete (from the clap structs).
    let (commands, _) = bash_complete(&t, &["dbackup", "co"], &[]);
    assert_eq!(commands, ["collect", "config"]);

    // A config with a syntax error: no names, no message in the middle of the prompt.
    let broken = t.write("broken.json", "{ \"backup_sets\": [ ");
    let (sets, err) = bash_complete(
        &t,
        &["dbackup", "collect", "--set", ""],
        &[("DBACKUP_CONFIG", broken.to_str().expect("UTF-8"))],
    );
    assert!(sets.is_empty(), "{sets:?}");
    assert_eq!(err, "");
}

/// A config with the set `docs`, the drive `T9` and the cloud destination `offsite`, then the destinations `more`
/// (each with a leading comma).
fn with_clouds(more: &str) -> Test {
    Test::new().config(
        &r#"{
  "backup_sets": [ { "name": "docs", "sources": ["{home}"] } ],
  "encryption": { "passphrase": true },
  "destinations": [ { "name": "T9", "path": "{tmp}/t9" },
                    { "name": "offsite", "kind": "s3", "bucket": "b", "region": "r" } MORE ]
}"#
        .replace("MORE", more),
    )
}

/// `--source` completes in every command that takes it (restore, snapshots, ls, find): its words, and `cloud:NAME` for
/// each cloud destination of the config. Before: restore, ls and find offered nothing (their `--source` is parsed by
/// hand, for `cloud:NAME`), and snapshots only `local`, `external` and `cloud`.
#[test]
fn bash_tab_offers_every_source_and_the_configs_cloud_destinations() {
    let t = with_clouds("");
    let config = t.path("config.json");
    let config = config.to_str().expect("a UTF-8 test path");
    for command in [&["restore"][..], &["snapshots"], &["ls"], &["find"]] {
        let mut words = vec!["dbackup"];
        words.extend(command);
        words.extend(["--source", ""]);
        let (sources, err) = bash_complete(&t, &words, &[("DBACKUP_CONFIG", config)]);
        assert_eq!(
            sources,
            ["local", "external", "drive", "cloud", "cloud:offsite"],
            "{command:?}; stderr: {err}"
        );
        words.pop();
        words.push("cl");
        let (sources, _) = bash_complete(&t, &words, &[("DBACKUP_CONFIG", config)]);
        assert_eq!(sources, ["cloud", "cloud:offsite"], "{command:?}");
    }
}

/// `--source cloud:of<TAB>` in bash completes `cloud:offsite`, as does `cloud:<TAB>`, and `--source=cloud:of<TAB>`:
/// bash splits the line at `:` and `=` too, so the completion is given the words the user typed, joined back, and
/// answers with what follows the last `:` or `=` (bash replaces only that). One with a blank before or after it
/// stays a word of its own. Before: bash handed the binary `cloud`, `:` and `of` as three words, and TAB offered
/// nothing after `cloud:` (or `--`), nor after `--source=`.
#[test]
fn bash_tab_completes_a_cloud_source_across_the_colon() {
    let t = with_clouds(r#", { "name": "other", "kind": "s3", "bucket": "c", "region": "r" }"#);
    let config = t.path("config.json");
    let env = [(
        "DBACKUP_CONFIG",
        config.to_str().expect("a UTF-8 test path"),
    )];
    for command in ["restore", "ls"] {
        let tab = |typed: &str| bash_complete(&t, &["dbackup", command, "--source", typed], &env);
        let (sources, err) = tab("cloud:of");
        assert_eq!(sources, ["offsite"], "{command}; stderr: {err}");
        assert_eq!(err, "");
        assert_eq!(tab("cloud:").0, ["offsite", "other"], "{command}");
        assert_eq!(tab("cloud:o").0, ["offsite", "other"], "{command}");
        assert_eq!(
            tab("cl").0,
            ["cloud", "cloud:offsite", "cloud:other"],
            "{command}"
        );
    }
    // `--option=value`: bash splits at `=` too.
    let tab = |words: &[&str]| bash_complete(&t, words, &env).0;
    assert_eq!(
        tab(&["dbackup", "restore", "--source=cloud:of"]),
        ["offsite"]
    );
    assert_eq!(
        tab(&["dbackup", "ls", "--source=cl"]),
        ["cloud", "cloud:offsite", "cloud:other"]
    );
    assert_eq!(tab(&["dbackup", "collect", "--set=d"]), ["docs"]);
    // What follows the value still completes from the words as typed.
    let (sets, _) = bash_complete(
        &t,
        &[
            "dbackup",
            "restore",
            "--source",
            "cloud:offsite",
            "--set",
            "d",
        ],
        &env,
    );
    assert_eq!(sets, ["docs"]);
}

/// Every man page `generate man` writes has NAME, SYNOPSIS and EXIT STATUS (each documented code in it), `dbackup.1`
/// also FILES and ENVIRONMENT, and every page another page names (`dbackup-collect(1)`) was written. Before:
/// `dbackup.1` and the pages of `config`, `image` and `systemd` named `dbackup-help(1)` and friends, which were never
/// generated, and no page had EXIT STATUS, FILES or ENVIRONMENT.
#[test]
fn man_pages_document_exit_status_and_name_only_pages_that_exist() {
    let t = Test::new();
    let dir = t.path("man");
    let out = t.cmd().args(["generate", "man"]).args([&dir]).status(0);
    let pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pages.len() > 10, "{pages:?}");
    assert_eq!(
        out.stdout.lines().count(),
        pages.len(),
        "one line per page written"
    );
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH \"EXIT STATUS\""] {
            assert!(text.contains(section), "{page} lacks {section}");
        }
        let exit_status = &text[text.find(".SH \"EXIT STATUS\"").unwrap_or(0)..];
        for (code, _) in dbackup::DOCUMENTED {
            assert!(
                exit_status.contains(code),
                "{page}'s EXIT STATUS lacks {code}"
            );
        }
        let unescaped = text
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\fI", "");
        for (at, _) in unescaped.match_indices("(1)") {
            let name: String = unescaped[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            assert!(
                pages.contains(&format!("{name}.1")),
                "{page} names {name}(1), which was not generated"
            );
        }
    }
    let root = std::fs::read_to_string(dir.join("dbackup.1")).unwrap();
    for section in [
        ".SH FILES",
        ".SH ENVIRONMENT",
        "config.json",
        "log.jsonl",
        "DBACKUP_CONFIG",
    ] {
        assert!(root.contains(section), "dbackup.1 lacks {section}");
    }
}

/// `--dry-run generate man DIR` writes nothing: it says which pages it would write. (Before: the dry run created
/// DIR and wrote every page.)
#[test]
fn a_dry_run_of_the_man_pages_writes_nothing() {
    let t = Test::new();
    let dir = t.path("man");
    let out = t
        .cmd()
        .args(["--dry-run", "generate", "man"])
        .args([&dir])
        .status(0);
    assert!(!dir.exists(), "the dry run wrote {}", dir.display());
    assert_eq!(out.stdout, "");
    out.stderr_has(&format!(
        "dry run: would write {}",
        dir.join("dbackup.1").display()
    ));
}
