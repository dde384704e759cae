//! The JSON Schema: generated from the config types, committed as `config/schema.json`, embedded in the binary.
