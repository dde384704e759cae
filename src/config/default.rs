//! The built-in default config (the seed's sets, schedule and retention), and its commented text for `config init`.
