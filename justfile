# Thin recipes over `cargo xtask` (run `cargo xtask --help` for the tasks and their options).

# List the recipes
default:
    @just --list

# Run every check and test, as CI does (installs missing system packages when root)
test *args:
    cargo xtask test {{args}}

# Back up a sample home under target/demo and show the result
demo:
    cargo xtask demo

# Run a benchmark: just bench collect [--reps 7 ...]
bench what="collect" *args:
    cargo xtask bench {{what}} {{args}}

# Install dbackup and its links into ~/.local/bin (or: just install --prefix /usr/local)
install *args:
    cargo xtask install {{args}}

# Run the root-only integration tests on real loop devices
itest *args:
    cargo xtask itest {{args}}

# Mutation testing of the pure core with cargo-mutants (slow; not part of test): just mutants [--jobs 2]
mutants *args:
    cargo xtask mutants {{args}}

# Run the backup job with the release build (uses your config)
backup *args:
    cargo run --release -- backup {{args}}

# Print the systemd units and udev rule for your config: just units --user [--out ~/.config/systemd/user]
units *args:
    cargo run --release -- systemd render {{args}}

# The Nix checks only (parse, lib tests; the module evaluation too when NIXPKGS_LIB names a nixpkgs.lib checkout,
# against NixOS's and home-manager's own unit types with NIXPKGS and HOME_MANAGER: see nix/tests/README.md)
nix-check:
    cargo xtask test --skip packages --skip fmt --skip clippy --skip test
