//! Finding, reading and validating a config file: comments allowed, schema errors located by line:column.
