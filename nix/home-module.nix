# home-manager module: `services.dbackup`. Your own systemd user manager runs dbackup, no root needed:
# dbackup-collect.timer on schedule.incremental, and dbackup-external.service when a backup drive is mounted (the
# user unit is wanted by the drive's mount unit, `run-media-<you>-T9.mount` for /run/media/<you>/T9, computed from
# each destination's path). The units come from nix/lib.nix, which renders exactly what
# `dbackup systemd render --user` writes for the same config, plus one setting of home-manager's own:
# `X-SwitchMethod=keep-old`, so a switch never restarts a running backup. They are given to systemd.user.services
# and systemd.user.timers as definitions that merge with yours: lists add, single values are lib.mkDefault.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.dbackup;
  dlib = import ./lib.nix;
  shared = import ./common.nix { inherit lib pkgs; };
  user = config.home.username;
  home = config.home.homeDirectory;

  configFile = shared.configFile {
    inherit cfg;
    user = user;
    home = home;
  };

  rendered = dlib.render {
    scope = "user";
    exe = lib.getExe' cfg.package "dbackup";
    inherit
      configFile
      user
      home
      ;
    inherit (cfg) environment settings;
  };

  # Each section of a unit of nix/lib.nix as definitions that merge with the user's.
  soft = unit: lib.mapAttrs (_: shared.soft) unit;

  service =
    name:
    lib.mkMerge [
      (soft rendered.units.${name})
      {
        # A backup can run for hours: a switch leaves a running one alone (sd-switch keeps the old unit until it
        # stops). The one setting `dbackup systemd render --user` does not write: it means nothing to systemd.
        Unit.X-SwitchMethod = lib.mkDefault "keep-old";
      }
      { Service = cfg.serviceConfig; }
    ];
  timer = lib.mkMerge [
    (soft rendered.units."dbackup-collect.timer")
    { Timer = cfg.timerConfig; }
  ];
in
{
  meta.maintainers = [ ];

  options.services.dbackup = {
    enable = lib.mkEnableOption "dbackup backups";

    package = lib.mkPackageOption pkgs "dbackup" { };

    settings = shared.settingsOption {
      description = ''
        The dbackup config (`dbackup config schema` prints its JSON Schema), checked at build time with
        `dbackup config check` and linked to `~/.config/dbackup/config.json`, so `dbackup status` and the other
        commands you run by hand use it too. `~` and `$HOME` are your home.

        Never put secrets here (a notification URL with a token, a password): the settings are written to the Nix
        store, which every user and process of the machine can read. Encrypted backups need no secret at all to be
        written: `encryption.recipients` holds public keys (`dbackup keygen` prints one), and `identity_file` or
        `passphrase_file` only name files kept outside the store (mode 0600), as strings: a Nix path there is
        refused.

        The timer runs on `schedule.incremental`. A destination's drive is used when it is mounted at its `path`
        (by your desktop: `/run/media/<you>/<label>` on NixOS and most distributions, `/media/<you>/<label>` on
        Debian and Ubuntu) and `schedule.external` says it is due (`manual`: never by itself). A notification
        `command` runs with your user manager's `PATH`: give its store path to be sure it is found.
      '';
      example = lib.literalExpression ''
        {
          backup_sets = [
            { name = "data"; sources = [ "~/data" ]; exclusions = [ "*.tmp" "~/data/cache/" ]; }
            { name = "config"; sources = [ "~/.config" "~/.secrets" ]; exclusions = [ "~/.config/Code/Cache/*" ]; }
          ];
          schedule = { incremental = "daily"; full = "weekly"; external = "weekly"; };
          retention = { local = { last = 7; daily = 14; weekly = 8; monthly = 12; }; external = 5; };
          destinations = [ { name = "T9"; path = "/run/media/payne/T9"; fs_label = "T9"; } ];
          encryption = { recipients = [ "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p" ]; };
          notifications = { events = [ "failure" "warning" "missing_media" "low_disk" "overdue" ]; desktop = true; };
        }
      '';
    };

  }
  // shared.unitOptions {
    timerExample = {
      OnCalendar = "*-*-* 12:30:00";
    };
    serviceExample = {
      CPUQuota = "50%";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      (lib.hm.assertions.assertPlatform "services.dbackup" pkgs lib.platforms.linux)
    ]
    ++ shared.secretAssertions {
      option = "services.dbackup.settings";
      inherit (cfg) settings environment;
      inherit user home;
    };

    home.packages = [ cfg.package ];
    xdg.configFile."dbackup/config.json".source = configFile;

    systemd.user.services.dbackup-collect = service "dbackup-collect.service";
    systemd.user.timers.dbackup-collect = timer;
    systemd.user.services.dbackup-external = service "dbackup-external.service";
    # The status page's server (`settings.report.serve.unit = true`; off by default).
    systemd.user.services.dbackup-serve = lib.mkIf (rendered.units ? "dbackup-serve.service") rendered.units."dbackup-serve.service";
  };
}
