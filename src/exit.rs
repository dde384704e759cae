//! The process exit codes every command shares, and how an error maps to one.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | ok |
//! | 1 | failed |
//! | 2 | usage or configuration error |
//! | 3 | finished with warnings (files vanished or were unreadable, ...) |
//! | 4 | another dbackup run holds the lock |
//! | 5 | no external destination present |
//! | 130, 143 | interrupted by SIGINT or SIGTERM (128 + the signal; see `crate::interrupt`) |

use serde::Serialize;

/// The documented exit codes of `dbackup`. Every command ends with one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Warnings = 3,
    Locked = 4,
    NoDestination = 5,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The outcome a phase's report records as its code (collect's sets, external's destinations): 0 ok, 3
    /// warnings, anything else failed.
    pub fn of_phase(code: u8) -> Exit {
        match code {
            0 => Exit::Ok,
            3 => Exit::Warnings,
            _ => Exit::Failed,
        }
    }

    /// The worse of two outcomes, for commands that run several steps (failure beats warnings beats ok).
    pub fn worst(self, other: Exit) -> Exit {
        fn rank(e: Exit) -> u8 {
            match e {
                Exit::Ok => 0,
                Exit::Warnings => 1,
                Exit::NoDestination => 2,
                Exit::Locked => 3,
                Exit::Failed => 4,
                Exit::Usage => 5,
            }
        }
        // On a tie, `self`: max_by_key returns its second argument.
        std::cmp::max_by_key(other, self, |e| rank(*e))
    }
}

/// Every exit status a run can end with and what it means: the one list the man pages' EXIT STATUS section and the
/// `--help` text are written from (the table at the top of this file says the same).
pub const DOCUMENTED: &[(&str, &str)] = &[
    ("0", "ok"),
    ("1", "failed"),
    ("2", "usage or configuration error"),
    (
        "3",
        "finished with warnings (files vanished or were unreadable, ...)",
    ),
    ("4", "another dbackup run holds the lock"),
    ("5", "no external destination present"),
    (
        "130, 143",
        "interrupted by SIGINT or SIGTERM (128 + the signal); nothing unfinished was promoted",
    ),
];

impl Exit {
    /// Every variant, in code order.
    pub const ALL: [Exit; 6] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Warnings,
        Exit::Locked,
        Exit::NoDestination,
    ];
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error that knows which exit code it deserves. Building blocks return their own `thiserror`
/// enums; those that are not plain failures (exit 1) implement this trait, and the list of them that [`classify`] is
/// given ([`crate::process::error_exit`]) names each one with [`probe`]: this module names none of them.
pub trait ExitCoded {
    fn exit(&self) -> Exit;
}

/// Wraps any error with an explicit exit code, for the edges (`anyhow`) where no typed error exists.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    pub code: Exit,
    pub message: String,
}

impl CodedError {
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        CodedError {
            code,
            message: message.into(),
        }
    }
}

/// An error of the user's words (exit 2), at the edges.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Usage, msg).into()
}

/// A plain failure (exit 1) with this message, at the edges.
pub fn failed(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Failed, msg).into()
}

impl ExitCoded for CodedError {
    fn exit(&self) -> Exit {
        self.code
    }
}

/// Reads the exit code off one error of a chain when it is of the type the probe was made for ([`probe`]).
pub type Probe = fn(&(dyn std::error::Error + 'static)) -> Option<Exit>;

/// The [`Probe`] for errors of type `E`.
pub fn probe<E: ExitCoded + std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
) -> Option<Exit> {
    cause.downcast_ref::<E>().map(ExitCoded::exit)
}

/// The exit code an error chain deserves: the first error in the chain that carries one (a [`CodedError`], an error
/// of a type `coded` probes for, a clap usage error), else 1.
pub fn classify(err: &anyhow::Error, coded: &[Probe]) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CodedError>() {
            return e.exit();
        }
        if let Some(code) = coded.iter().find_map(|probe| probe(cause)) {
            return code;
        }
        if cause.downcast_ref::<clap::Error>().is_some() {
            return Exit::Usage;
        }
    }
    Exit::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_once() {
        for e in Exit::ALL {
            let code = e.code().to_string();
            assert_eq!(
                DOCUMENTED.iter().filter(|(c, _)| *c == code).count(),
                1,
                "exit code {code} ({e:?}) must be in DOCUMENTED exactly once"
            );
        }
        assert_eq!(
            DOCUMENTED.len(),
            Exit::ALL.len() + 1,
            "the codes and the interruption line"
        );
    }

    #[test]
    fn worst_prefers_failure_over_warnings() {
        assert_eq!(Exit::Ok.worst(Exit::Warnings), Exit::Warnings);
        assert_eq!(Exit::Warnings.worst(Exit::Failed), Exit::Failed);
        assert_eq!(Exit::Failed.worst(Exit::Ok), Exit::Failed);
    }

    #[test]
    fn coded_errors_keep_their_code_through_context() {
        let err = anyhow::Error::new(CodedError::new(Exit::Locked, "held")).context("collect");
        assert_eq!(classify(&err, &[]), Exit::Locked);
        assert_eq!(classify(&anyhow::anyhow!("plain"), &[]), Exit::Failed);
    }
}
