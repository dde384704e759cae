//! The JSON Schema: generated from the config types, committed as `config/schema.json`, embedded in the binary.
//!
//! The committed file and the types cannot drift: the `committed_schema_is_current` test fails when they
//! differ; `DBACKUP_UPDATE_SCHEMA=1 cargo test committed_schema_is_current` rewrites the file.

use std::sync::LazyLock;

use serde_json::Value;

#[cfg(test)]
use super::Config;

/// The schema as committed in `config/schema.json` and printed by `dbackup config schema`.
pub const EMBEDDED: &str = include_str!("../../config/schema.json");

/// The pattern every set and destination name must match (a safe file name on ext4 and exFAT alike).
pub const SAFE_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$";

/// What [`SAFE_NAME_PATTERN`] allows, in words.
pub const SAFE_NAME_RULE: &str =
    "1 to 64 letters, digits, `_`, `-` and `.`, not starting with `.` or `-`";

/// Generates the schema from the Rust types (what `config/schema.json` must contain).
#[cfg(test)]
pub fn generate() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(tighten))
        .into_generator();
    let schema = generator.into_root_schema_for::<Config>();
    schema.to_value()
}

/// Tightens what schemars generates so the schema alone decides validity:
/// - optional keys are left out, never `null`: `"type": ["string", "null"]` becomes `"type": "string"`;
/// - integers get the bounds of their Rust type (`"format": "uint32"` alone is only an annotation).
#[cfg(test)]
fn tighten(schema: &mut schemars::Schema) {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.pop().expect("one type");
            schema.insert("type".into(), only);
        }
    }
    let bounds: Option<(i64, i64)> = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => Some((0, u8::MAX.into())),
        Some("uint32") => Some((0, u32::MAX.into())),
        Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
        _ => None,
    };
    if let Some((lo, hi)) = bounds {
        if schema.get("minimum").is_none() {
            schema.insert("minimum".into(), lo.into());
        }
        if schema.get("maximum").is_none() {
            schema.insert("maximum".into(), hi.into());
        }
    }
}

/// The text `config/schema.json` must hold: the generated schema, pretty-printed, with a final newline.
#[cfg(test)]
pub fn generate_text() -> String {
    let mut text = serde_json::to_string_pretty(&generate()).expect("a schema serializes");
    text.push('\n');
    text
}

/// The embedded schema, parsed.
pub fn embedded() -> &'static Value {
    static SCHEMA: LazyLock<Value> =
        LazyLock::new(|| serde_json::from_str(EMBEDDED).expect("config/schema.json is valid JSON"));
    &SCHEMA
}

/// A validator compiled from the embedded schema.
pub fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(embedded())
            .expect("config/schema.json is a valid JSON Schema")
    });
    &VALIDATOR
}

/// Checks that the committed file `rel` (from the crate's root) is `generated` (`what`: from what), or rewrites it
/// when `DBACKUP_UPDATE_SCHEMA=1`; the failure says how to regenerate it (`regenerate`: the test's name, and what
/// then).
#[cfg(test)]
pub(crate) fn check_committed(rel: &str, generated: &str, what: &str, regenerate: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if std::env::var_os("DBACKUP_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} differs from {what}.\n\
         Regenerate it with:  DBACKUP_UPDATE_SCHEMA=1 cargo test {regenerate}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_current() {
        check_committed(
            "config/schema.json",
            &generate_text(),
            "the schema generated from src/config/mod.rs",
            "committed_schema_is_current\n\
             then review the diff, rebuild (the schema is embedded) and commit it.",
        );
    }

    #[test]
    fn embedded_schema_compiles() {
        let _ = validator();
    }

    #[test]
    fn names_use_the_safe_name_pattern() {
        assert!(EMBEDDED.contains(&serde_json::to_string(SAFE_NAME_PATTERN).unwrap()));
    }
}
