# What the NixOS and the home-manager modules share: the config file checked at build time, and the options that
# reach into the units (environment, timerConfig, serviceConfig). Each module passes its own user, home and examples.
{ lib, pkgs }:

let
  json = pkgs.formats.json { };
in
rec {
  # A value of a unit setting.
  setting = lib.types.oneOf [
    lib.types.str
    lib.types.int
    lib.types.bool
  ];

  # The config, checked at build time: `dbackup config check` must accept it (schema and semantics: names, paths,
  # variables), or the system or home generation does not build.
  configFile =
    {
      cfg,
      user,
      home,
    }:
    pkgs.runCommand "dbackup-config.json"
      (
        {
          nativeBuildInputs = [ cfg.package ];
          unchecked = json.generate "dbackup-config-unchecked.json" cfg.settings;
        }
        // cfg.environment
      )
      ''
        export HOME=${lib.escapeShellArg home} USER=${lib.escapeShellArg user} LOGNAME=${lib.escapeShellArg user}
        dbackup --config "$unchecked" config check >&2
        cp "$unchecked" "$out"
      '';

  unitOptions =
    { timerExample, serviceExample }:
    {
      environment = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        example = {
          DDATA = "/data";
        };
        description = ''
          Variables that `settings` uses (`$DDATA`) other than `HOME`, `USER` and `LOGNAME`: set in the units and for
          the build-time check. Like the settings, they end up in the world-readable Nix store.
        '';
      };

      timerConfig = lib.mkOption {
        type = lib.types.attrsOf setting;
        default = { };
        example = timerExample;
        description = ''
          Settings for the `[Timer]` section of dbackup-collect.timer, over those from the schedule
          (`OnCalendar=` from `schedule.incremental`, `Persistent=true`, `RandomizedDelaySec=`).
        '';
      };

      serviceConfig = lib.mkOption {
        type = lib.types.attrsOf (lib.types.either setting (lib.types.listOf setting));
        default = { };
        example = serviceExample;
        description = "Settings for the `[Service]` section of both units, over dbackup's own.";
      };
    };
}
