# `render` of nix/lib.nix for one case file (JSON: scope, exe, configFile, user, home, environment, settings), as
# tests/integration/systemd.rs evaluates it to compare with `dbackup systemd render --format json`:
#   nix-instantiate --eval --strict --json nix/tests/render.nix --argstr caseFile /path/to/case.json
{ caseFile }:
(import ../lib.nix).render (builtins.fromJSON (builtins.readFile caseFile))
