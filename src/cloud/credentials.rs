//! Where a cloud destination's keys come from: its `credentials_file` (mode 0600, refused when others can read
//! it), else the environment (`AWS_ACCESS_KEY_ID`, ...; `B2_APPLICATION_KEY_ID`, ...), else (s3) the AWS shared
//! credentials and config files. Read only when the destination is used; held as [`Secret`]s, which never print.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::expand::Env;
use crate::settings::{CloudKind, CloudSettings};

/// The most a credentials file may hold: more is not a credentials file.
const MAX_FILE: u64 = 256 * 1024;

/// A secret string: its `Debug` shows `***`, it has no `Display`, and it is only read through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the signer and for redaction; never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A destination's keys, and where they were found.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The access key id (s3) or application key id (b2). Not shown either: it names the account.
    pub id: Secret,
    /// The secret access key (s3) or application key (b2).
    pub secret: Secret,
    /// s3: a session token of temporary credentials.
    pub session_token: Option<Secret>,
    pub source: Source,
}

impl Keys {
    /// Every secret string these keys hold, for scrubbing messages (the id too: it names the account).
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = vec![self.id.expose(), self.secret.expose()];
        out.extend(self.session_token.as_ref().map(Secret::expose));
        out.retain(|s| !s.is_empty());
        out
    }
}

/// Where keys were found: shown to the user (it holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// The destination's `credentials_file`.
    CredentialsFile { path: PathBuf },
    /// Environment variables (the id's variable named).
    Environment { variable: String },
    /// A profile of an AWS shared credentials or config file.
    SharedFile { path: PathBuf, profile: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CredentialsFile { path } => write!(f, "credentials_file {}", path.display()),
            Source::Environment { variable } => write!(f, "the environment (${variable})"),
            Source::SharedFile { path, profile } => {
                write!(f, "profile {profile:?} of {}", path.display())
            }
        }
    }
}

/// Why no keys could be had. Exit code 2: configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("no credentials for cloud destination {name:?}: {looked}")]
    Missing { name: String, looked: String },
    #[error("credentials file {}: {why}", path.display())]
    File { path: PathBuf, why: String },
}

impl crate::exit::ExitCoded for CredentialsError {
    fn exit(&self) -> crate::exit::Exit {
        crate::exit::Exit::Usage
    }
}

/// The keys of a destination, from the first place that has them (see the module's doc).
pub fn resolve(cloud: &CloudSettings, env: &Env) -> Result<Keys, CredentialsError> {
    match cloud.kind {
        CloudKind::S3 => resolve_s3(cloud, env),
        CloudKind::B2 => resolve_b2(cloud, env),
    }
}

/// The cloud destinations without a `credentials_file` whose keys cannot be found in this environment (no request
/// is sent: the variables and the shared files are only read), one warning each: uploads to them are refused (exit
/// 2). A warning, not an error: the unit that runs the backups may have an environment of its own. (A
/// `credentials_file` that does not exist is warned of already, one others can read refused.)
pub fn missing_keys(clouds: &[CloudSettings], env: &Env) -> Vec<String> {
    clouds
        .iter()
        .filter(|c| c.credentials_file.is_none())
        .filter_map(|c| {
            let e = resolve(c, env).err()?;
            Some(format!(
                "{e}; uploads to it are refused (exit 2) until the keys are found where the backups run \
                 (`dbackup cloud check {}` tests them)",
                c.name
            ))
        })
        .collect()
}

fn resolve_s3(cloud: &CloudSettings, env: &Env) -> Result<Keys, CredentialsError> {
    if let Some(path) = &cloud.credentials_file {
        let ini = read_credentials_file(path)?;
        let profile = cloud.profile.clone().unwrap_or_else(|| "default".into());
        let section = ini.section(&profile).ok_or_else(|| CredentialsError::File {
            path: path.clone(),
            why: format!(
                "no aws_access_key_id and aws_secret_access_key (at the top, or in a [{profile}] section)"
            ),
        })?;
        return aws_keys(&section, Source::CredentialsFile { path: path.clone() }).ok_or_else(
            || CredentialsError::File {
                path: path.clone(),
                why: "it needs both aws_access_key_id and aws_secret_access_key".into(),
            },
        );
    }
    // An explicit profile means the shared files, as `aws --profile` does.
    if cloud.profile.is_none()
        && let (Some(id), Some(secret)) = (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        )
    {
        return Ok(Keys {
            id: Secret::new(id),
            secret: Secret::new(secret),
            session_token: env.var("AWS_SESSION_TOKEN").map(Secret::new),
            source: Source::Environment {
                variable: "AWS_ACCESS_KEY_ID".into(),
            },
        });
    }
    let profile = cloud
        .profile
        .clone()
        .or_else(|| env.var("AWS_PROFILE").map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let [credentials, config] = crate::settings::aws_shared_files(env).map(|f| f.path);
    for (path, section) in [
        (&credentials, profile.clone()),
        (
            &config,
            if profile == "default" {
                "default".into()
            } else {
                format!("profile {profile}")
            },
        ),
    ] {
        let Some(ini) = read_shared_file(path)? else {
            continue;
        };
        if let Some(keys) = ini.section(&section).and_then(|s| {
            aws_keys(
                &s,
                Source::SharedFile {
                    path: path.clone(),
                    profile: profile.clone(),
                },
            )
        }) {
            return Ok(keys);
        }
    }
    Err(CredentialsError::Missing {
        name: cloud.name.clone(),
        looked: format!(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in profile {profile:?} of {} or {}, or in \
             a file (chmod 600) named by the destination's `credentials_file`",
            credentials.display(),
            config.display()
        ),
    })
}

fn resolve_b2(cloud: &CloudSettings, env: &Env) -> Result<Keys, CredentialsError> {
    if let Some(path) = &cloud.credentials_file {
        let ini = read_credentials_file(path)?;
        let get = |names: &[&str]| {
            ini.section("default")
                .and_then(|s| names.iter().find_map(|n| s.get(n).map(str::to_string)))
        };
        let id = get(&["b2_application_key_id", "application_key_id"]);
        let key = get(&["b2_application_key", "application_key"]);
        return match (id, key) {
            (Some(id), Some(key)) => Ok(Keys {
                id: Secret::new(id),
                secret: Secret::new(key),
                session_token: None,
                source: Source::CredentialsFile { path: path.clone() },
            }),
            _ => Err(CredentialsError::File {
                path: path.clone(),
                why: "it needs both b2_application_key_id and b2_application_key".into(),
            }),
        };
    }
    match (
        env.var("B2_APPLICATION_KEY_ID"),
        env.var("B2_APPLICATION_KEY"),
    ) {
        (Some(id), Some(key)) => Ok(Keys {
            id: Secret::new(id),
            secret: Secret::new(key),
            session_token: None,
            source: Source::Environment {
                variable: "B2_APPLICATION_KEY_ID".into(),
            },
        }),
        _ => Err(CredentialsError::Missing {
            name: cloud.name.clone(),
            looked: "set B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY, or put b2_application_key_id and \
                     b2_application_key in a file (chmod 600) named by the destination's `credentials_file`"
                .into(),
        }),
    }
}

fn aws_keys(section: &Section, source: Source) -> Option<Keys> {
    Some(Keys {
        id: Secret::new(section.get("aws_access_key_id")?),
        secret: Secret::new(section.get("aws_secret_access_key")?),
        session_token: section.get("aws_session_token").map(Secret::new),
        source,
    })
}

/// The destination's own file: it must exist, be a regular file only its owner can read, and be small.
fn read_credentials_file(path: &Path) -> Result<Ini, CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |why: String| CredentialsError::File {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "other users can read it (mode {:04o}); run `chmod 600 {}` and try again",
            mode & 0o7777,
            path.display()
        )));
    }
    read_small(file, path).map_err(err)
}

/// An AWS shared file: absent is fine (`None`); present, it must be a small regular file.
fn read_shared_file(path: &Path) -> Result<Option<Ini>, CredentialsError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::File {
                path: path.to_path_buf(),
                why: e.to_string(),
            });
        }
    };
    read_small(file, path)
        .map(Some)
        .map_err(|why| CredentialsError::File {
            path: path.to_path_buf(),
            why,
        })
}

fn read_small(file: std::fs::File, path: &Path) -> Result<Ini, String> {
    use std::io::Read;
    let mut text = String::new();
    let n = file
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it as text: {e}"))?;
    if n as u64 > MAX_FILE {
        return Err(format!(
            "larger than {} KiB: not a credentials file",
            MAX_FILE / 1024
        ));
    }
    let _ = path;
    Ok(Ini::parse(&text))
}

/// One `[section]` of an INI file: `key = value` pairs, keys lower-cased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Section(pub Vec<(String, String)>);

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The INI dialect of `~/.aws/credentials`: `[name]` sections, `key = value` lines, `#` and `;` comments. Lines
/// before any section form the section `default` too (a credentials file of bare `key = value` lines).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ini(pub Vec<(String, Section)>);

impl Ini {
    pub fn parse(text: &str) -> Ini {
        let mut sections: Vec<(String, Section)> = vec![("default".into(), Section::default())];
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                sections.push((name.trim().to_string(), Section::default()));
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let last = &mut sections.last_mut().expect("one section at least").1;
                last.0
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Ini(sections)
    }

    /// The named section's keys (later sections of the same name add to earlier ones).
    pub fn section(&self, name: &str) -> Option<Section> {
        let pairs: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, s)| s.0.iter().cloned())
            .collect();
        (!pairs.is_empty()).then_some(Section(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    /// A destination of `kind` with no endpoint, profile or credentials file: the store tests' settings otherwise.
    fn cloud(kind: CloudKind) -> CloudSettings {
        CloudSettings {
            name: "off".into(),
            kind,
            endpoint: None,
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style: false,
            retries: 0,
            timeout_seconds: 60,
            ..crate::cloud::tests::settings("", "b")
        }
    }

    fn env(home: &Path, vars: &[(&str, &str)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            home: home.to_path_buf(),
            cwd: "/".into(),
        }
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// S3 settings whose `credentials_file` is `file`, written with `text` and `mode`.
    fn s3_with_keys_file(file: &Path, text: &str, mode: u32) -> CloudSettings {
        write(file, text, mode);
        CloudSettings {
            credentials_file: Some(file.to_path_buf()),
            ..cloud(CloudKind::S3)
        }
    }

    #[test]
    fn s3_keys_come_from_the_file_then_the_environment_then_the_shared_files() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let vars = [
            ("AWS_ACCESS_KEY_ID", "ENVID"),
            ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
        ];
        // The environment, without a credentials_file.
        let k = resolve(&cloud(CloudKind::S3), &env(home, &vars)).unwrap();
        assert_eq!((k.id.expose(), k.secret.expose()), ("ENVID", "ENVSECRET"));
        assert_eq!(k.source.to_string(), "the environment ($AWS_ACCESS_KEY_ID)");

        // The shared credentials file's default profile, then a named one from the config file.
        write(
            &home.join(".aws/credentials"),
            "# comment\n[default]\naws_access_key_id = DEFID\naws_secret_access_key=DEFSECRET\n",
            0o600,
        );
        write(
            &home.join(".aws/config"),
            "[profile work]\naws_access_key_id = WORKID\naws_secret_access_key = WORKSECRET\naws_session_token = T\n",
            0o600,
        );
        let k = resolve(&cloud(CloudKind::S3), &env(home, &[])).unwrap();
        assert_eq!(k.id.expose(), "DEFID");
        let k = resolve(
            &cloud(CloudKind::S3),
            &env(home, &[("AWS_PROFILE", "work")]),
        )
        .unwrap();
        assert_eq!(k.id.expose(), "WORKID");
        assert_eq!(k.session_token.as_ref().unwrap().expose(), "T");
        // An explicit profile wins over the environment, as `aws --profile` does.
        let mut c = cloud(CloudKind::S3);
        c.profile = Some("work".into());
        assert_eq!(
            resolve(&c, &env(home, &vars)).unwrap().id.expose(),
            "WORKID"
        );

        // credentials_file wins over everything, bare lines or a section.
        let file = home.join("keys");
        let c = s3_with_keys_file(
            &file,
            "aws_access_key_id = FILEID\naws_secret_access_key = FILESECRET\n",
            0o600,
        );
        let k = resolve(&c, &env(home, &vars)).unwrap();
        assert_eq!(k.id.expose(), "FILEID");
        assert_eq!(k.source, Source::CredentialsFile { path: file.clone() });
        assert_eq!(format!("{k:?}").matches("FILE").count(), 0, "{k:?}");
    }

    #[test]
    fn a_credentials_file_others_can_read_is_refused_and_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("keys");
        let c = s3_with_keys_file(
            &file,
            "aws_access_key_id = ID\naws_secret_access_key = SECRET\n",
            0o644,
        );
        let err = resolve(&c, &env(tmp.path(), &[])).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn missing_and_incomplete_keys_say_where_to_put_them() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve(
            &cloud(CloudKind::S3),
            &env(tmp.path(), &[("AWS_ACCESS_KEY_ID", "X")]),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::Missing { .. }));
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");

        let err = resolve(&cloud(CloudKind::B2), &env(tmp.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("B2_APPLICATION_KEY_ID"), "{err}");

        let file = tmp.path().join("b2");
        write(&file, "b2_application_key_id = K\n", 0o600);
        let mut c = cloud(CloudKind::B2);
        c.credentials_file = Some(file.clone());
        let err = resolve(&c, &env(tmp.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("b2_application_key"), "{err}");
        write(
            &file,
            "[default]\nb2_application_key_id = K\nb2_application_key = S\n",
            0o600,
        );
        let k = resolve(&c, &env(tmp.path(), &[])).unwrap();
        assert_eq!((k.id.expose(), k.secret.expose()), ("K", "S"));
        let k = resolve(
            &cloud(CloudKind::B2),
            &env(
                tmp.path(),
                &[
                    ("B2_APPLICATION_KEY_ID", "EK"),
                    ("B2_APPLICATION_KEY", "ES"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(k.secrets(), ["EK", "ES"]);
    }
}
