//! Dynamic shell completion: clap_complete's engine answers the shell's TAB (`DBACKUP_COMPLETE=bash dbackup -- WORDS`),
//! offering subcommands and flags from the clap structs, and set and destination names from the config.
//!
//! The registration scripts (`dbackup generate completions SHELL`, installed by `cargo xtask install` and the Nix
//! package) call the binary on each TAB, so the names follow the config as it is edited. A completion reads the
//! config the command would read (`--config` on the line being completed, else `$DBACKUP_CONFIG`, else the default
//! location, else the built-in default) and is silent on any error: a bad config offers no names, never a message
//! in the middle of the user's prompt.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;

use crate::config::Config;
use crate::expand::Env;

/// The variable that turns a run into a completion (clap_complete's default, `COMPLETE`, is too common a name).
pub const VAR: &str = "DBACKUP_COMPLETE";

/// Answers the shell and returns the exit code when this process was started for a completion; `None` otherwise
/// (the run goes on). Called by `main_entry` before parsing, with the clap command (`Cli::command`: this module
/// does not import `cli`, whose structs name the completers below).
pub fn answer_if_asked(command: fn() -> clap::Command) -> Option<u8> {
    if std::env::var_os(VAR).is_none_or(|v| v.is_empty() || v == "0") {
        return None;
    }
    let env = clap_complete::CompleteEnv::with_factory(command).var(VAR);
    let answered = env.try_complete(std::env::args_os(), std::env::current_dir().ok().as_deref());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // An unknown shell name: exit 1 without a message (the shell shows nothing either way).
    Some(if matches!(answered, Ok(true)) { 0 } else { 1 })
}

/// The registration script of `shell` (what `dbackup generate completions SHELL` prints): it calls `completer` (the
/// binary, by name or path) on every TAB.
pub fn registration(shell: clap_complete::Shell, completer: &str) -> std::io::Result<Vec<u8>> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let Some(adapter) = shells.completer(&name) else {
        return Err(std::io::Error::other(format!(
            "no dynamic completion for {name}; use bash, zsh, fish, elvish or powershell"
        )));
    };
    let mut script = Vec::new();
    adapter.write_registration(VAR, "dbackup", "dbackup", completer, &mut script)?;
    if shell == clap_complete::Shell::Bash {
        script.extend_from_slice(BASH_COLONS.as_bytes());
    }
    Ok(script)
}

/// Appended to clap's bash registration, and registered in its place: bash splits the words of the line at `:` and
/// `=` too (`COMP_WORDBREAKS`), so `--source cloud:of<TAB>` reached the binary as `cloud`, `:`, `of` and offered
/// nothing. The words the user typed are joined back (a `:` or `=` not preceded or followed by a blank belongs to
/// its neighbours, as bash-completion's `_get_comp_words_by_ref -n =:` does), clap's function answers for them, and
/// the text up to the last `:` or `=` is taken off the answers, since bash replaces only what follows it
/// (`__ltrim_colon_completions`).
const BASH_COLONS: &str = r#"
_dbackup_complete() {
    local words=() starts=() cword=0 i word line=$COMP_LINE at=0 rest blank
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        word=${COMP_WORDS[i]}
        rest=${line#"${line%%[![:blank:]]*}"}
        blank=$(( ${#line} - ${#rest} ))
        at=$(( at + blank ))
        line=$rest
        if (( i > 1 && blank == 0 )) && [[ $word == +([:=]) || ${COMP_WORDS[i-1]} == +([:=]) ]]; then
            words[${#words[@]}-1]+=$word
        else
            words+=("$word")
            starts+=("$at")
        fi
        (( i == COMP_CWORD )) && cword=$(( ${#words[@]} - 1 ))
        [[ $line == "$word"* ]] || { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; starts=(); break; }
        line=${line:${#word}}
        at=$(( at + ${#word} ))
    done
    local cur=$2
    if (( ${#starts[@]} )); then
        cur=${COMP_LINE:${starts[cword]}:$(( COMP_POINT - ${starts[cword]} ))}
    fi
    local COMP_WORDS=("${words[@]}") COMP_CWORD=$cword
    _clap_complete_dbackup "$1" "$cur" "${words[cword > 0 ? cword - 1 : 0]}"
    local breaks=${COMP_WORDBREAKS//[^:=]/}
    if [[ -n $breaks && $cur == *["$breaks"]* && ${COMPREPLY+set} ]]; then
        local replaced=${cur%"${cur##*["$breaks"]}"}
        COMPREPLY=("${COMPREPLY[@]#"$replaced"}")
    fi
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -o nospace -o bashdefault -o nosort -F _dbackup_complete dbackup
else
    complete -o nospace -o bashdefault -F _dbackup_complete dbackup
fi
"#;

/// `--set NAME`: the config's set names starting with what is typed.
pub fn set_names(current: &OsStr) -> Vec<CompletionCandidate> {
    candidates(current, |c| {
        c.backup_sets.iter().map(|s| s.name.clone()).collect()
    })
}

/// `--destination NAME`: the config's destination names starting with what is typed.
pub fn destination_names(current: &OsStr) -> Vec<CompletionCandidate> {
    candidates(current, |c| {
        c.destinations.iter().map(|d| d.name.clone()).collect()
    })
}

/// `--source` of restore, snapshots, ls and find: its words, then `cloud:NAME` for each of the config's cloud
/// destinations (the words alone when the config cannot be read).
pub fn source_values(current: &OsStr) -> Vec<CompletionCandidate> {
    let mut words: Vec<String> = ["local", "external", "drive", "cloud"]
        .map(String::from)
        .into();
    if let Some(config) = config_of_line(std::env::args_os().collect()) {
        words.extend(
            config
                .destinations
                .iter()
                .filter(|d| !d.kind.is_drive())
                .map(|d| format!("cloud:{}", d.name)),
        );
    }
    starting_with(current, words)
}

fn candidates(current: &OsStr, names: impl Fn(&Config) -> Vec<String>) -> Vec<CompletionCandidate> {
    let Some(config) = config_of_line(std::env::args_os().collect()) else {
        return Vec::new();
    };
    starting_with(current, names(&config))
}

/// The `words` that start with what is typed, as candidates.
fn starting_with(current: &OsStr, words: Vec<String>) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy();
    words
        .into_iter()
        .filter(|n| n.starts_with(typed.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The config the command being completed would read, or `None` when it cannot be read or is invalid.
fn config_of_line(args: Vec<OsString>) -> Option<Config> {
    let env = Env::from_process();
    let flag = config_flag(&args);
    crate::config::load::load(flag.as_deref(), &env)
        .ok()
        .map(|l| l.config)
}

/// `--config PATH` or `--config=PATH` among the words after `--` (the line being completed), the last one winning
/// as clap's would.
fn config_flag(args: &[OsString]) -> Option<PathBuf> {
    let words = args.iter().skip_while(|a| *a != "--").skip(1);
    let mut found = None;
    let mut next_is_value = false;
    for word in words {
        if next_is_value {
            found = Some(PathBuf::from(word));
            next_is_value = false;
        } else if word == "--config" {
            next_is_value = true;
        } else if let Some(v) = word.to_str().and_then(|w| w.strip_prefix("--config=")) {
            found = Some(PathBuf::from(v));
        }
    }
    found.filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_flag_is_read_from_the_line_being_completed() {
        assert_eq!(
            config_flag(&os(&["dbackup", "--", "dbackup", "collect", "--set", ""])),
            None
        );
        assert_eq!(
            config_flag(&os(&[
                "dbackup", "--", "dbackup", "--config", "/c.json", "collect", "--set"
            ])),
            Some(PathBuf::from("/c.json"))
        );
        assert_eq!(
            config_flag(&os(&[
                "dbackup",
                "--",
                "dbackup",
                "--config=/a",
                "x",
                "--config",
                "/b"
            ])),
            Some(PathBuf::from("/b"))
        );
        // Words before `--` are the completer's own.
        assert_eq!(
            config_flag(&os(&["dbackup", "--config", "/x", "--", "dbackup"])),
            None
        );
    }
}
