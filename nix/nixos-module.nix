# NixOS module: `services.dbackup`. The system manager runs dbackup as `user`: dbackup-collect.timer on
# schedule.incremental, and dbackup-external.service when a backup drive appears (a udev rule on the drive's label or
# uuid, and the drive's mount unit). The units come from nix/lib.nix, which renders exactly what
# `dbackup systemd render --system` writes for the same config, and are given to systemd.services and
# systemd.timers as definitions that merge with yours: lists add, single values are lib.mkDefault.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.dbackup;
  shared = import ./common.nix { inherit lib pkgs; };
  dlib = import ./lib.nix;

  configFile = shared.configFile {
    inherit cfg;
    user = cfg.user;
    home = cfg.home;
  };

  rendered = dlib.render {
    scope = "system";
    exe = lib.getExe' cfg.package "dbackup";
    inherit configFile;
    inherit (cfg) user home environment settings;
  };

  # A unit of nix/lib.nix as the options of systemd.services / systemd.timers.
  common = unit: {
    description = lib.mkDefault unit.Unit.Description;
    documentation = unit.Unit.Documentation;
    after = unit.Unit.After or [ ];
    wants = unit.Unit.Wants or [ ];
    unitConfig = shared.soft (
      builtins.removeAttrs unit.Unit [
        "Description"
        "Documentation"
        "After"
        "Wants"
      ]
    );
    wantedBy = unit.Install.WantedBy or [ ];
  };
  service =
    name:
    let
      unit = rendered.units.${name};
    in
    lib.mkMerge [
      (common unit)
      {
        serviceConfig = shared.soft unit.Service;
        # Oneshot jobs that can run for hours: a rebuild must not start or restart them.
        restartIfChanged = lib.mkDefault false;
      }
      { serviceConfig = cfg.serviceConfig; }
    ];
  timer =
    let
      unit = rendered.units."dbackup-collect.timer";
    in
    lib.mkMerge [
      (common unit)
      { timerConfig = shared.soft unit.Timer; }
      { timerConfig = cfg.timerConfig; }
    ];

  # ProtectSystem=strict: what the units may write must exist before they start (ReadWritePaths=). The backup
  # root and the run log's directory (each with its parents below the home, owned by the user: systemd-tmpfiles
  # would make a missing one root's, then refuse the path) are made at boot and on each switch; `:` leaves the
  # mode and owner of one that exists alone.
  group =
    let
      g = config.users.users.${cfg.user}.group or "";
    in
    if g == "" then "-" else ":${g}";
  dir = mode: {
    d = {
      mode = ":${mode}";
      user = ":${cfg.user}";
      inherit group;
    };
  };
  seen = dlib.dirs { inherit (cfg) user home environment settings; };
  # tmpfiles.d entries (path -> entry) with each path as a tmpfiles.d line reads it: NixOS writes it between single
  # quotes as it is, and systemd-tmpfiles expands specifiers (`%u`) and takes a backslash as an escape there.
  tmpfiles = lib.mapAttrs' (
    path: lib.nameValuePair (lib.replaceStrings [ "\\" "'" "%" ] [ "\\\\" "\\'" "%%" ] path)
  );
  # The directories between the home and `path`, which the user must own (`~/.local`, `~/.local/state`); none for a
  # path outside the home.
  between =
    home: path:
    let
      prefix = if dlib.normalize home == "/" then "/" else dlib.normalize home + "/";
      parts = lib.splitString "/" (lib.removePrefix prefix path);
    in
    lib.optionals (lib.hasPrefix prefix path) (
      lib.genList (i: prefix + lib.concatStringsSep "/" (lib.take (i + 1) parts)) (lib.length parts - 1)
    );
in
{
  meta.maintainers = [ ];

  options.services.dbackup = {
    enable = lib.mkEnableOption "dbackup backups";

    package = lib.mkPackageOption pkgs "dbackup" { };

    user = lib.mkOption {
      type = lib.types.str;
      example = "payne";
      description = ''
        The user dbackup runs as. The snapshots, the run log (`~/.local/state/dbackup`) and the files on the drive
        belong to this user, and `~` and `$HOME` in `settings` are this user's home. Use `root` only to back up
        files that user cannot read.
      '';
    };

    home = lib.mkOption {
      type = lib.types.str;
      default = config.users.users.${cfg.user}.home or "/home/${cfg.user}";
      defaultText = lib.literalExpression "config.users.users.\${config.services.dbackup.user}.home";
      description = "The home directory of `user`: what `~` and `$HOME` in `settings` mean.";
    };

    settings = shared.settingsOption {
      description = ''
        The dbackup config: what `~/.config/dbackup/config.json` holds (`dbackup config schema` prints its JSON
        Schema). It is checked at build time with `dbackup config check`, and installed as
        `/etc/dbackup/config.json` for running dbackup by hand (`dbackup --config /etc/dbackup/config.json status`).

        Never put secrets here (a notification URL with a token, a password): the settings are written to the Nix
        store, which every user and process of the machine can read. Encrypted backups need no secret at all to be
        written: `encryption.recipients` holds public keys (`dbackup keygen` prints one), and `identity_file` or
        `passphrase_file` only name files kept outside the store (mode 0600), as strings: a Nix path there is
        refused.

        The timer runs on `schedule.incremental`; the drive is used when `schedule.external` says it is due, as
        soon as it is plugged in (`manual`: never by itself). Each destination's `fs_uuid` or `fs_label` is what the
        udev rule recognises the drive by. The units may write only the backup root, the run log's directory and
        the destinations (`ProtectSystem=strict`); a notification `command` is looked up on the units' `PATH`
        (dbackup's own tools, and `systemd.services.<name>.path`), or give its store path.
      '';
      example = lib.literalExpression ''
        {
          backup_root = "/srv/backup";
          backup_sets = [
            { name = "data"; sources = [ "~/data" ]; exclusions = [ "*.tmp" ]; }
            { name = "config"; sources = [ "~/.config" "~/.secrets" ]; }
          ];
          schedule = { incremental = "daily"; full = "weekly"; external = "weekly"; };
          retention = { local = { last = 7; daily = 14; weekly = 8; }; external = 5; };
          destinations = [ { name = "T9"; path = "/run/media/payne/T9"; fs_label = "T9"; } ];
          encryption = { recipients = [ "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p" ]; };
        }
      '';
    };

  }
  // shared.unitOptions {
    timerExample = {
      OnCalendar = "*-*-* 02:30:00";
      RandomizedDelaySec = "15min";
    };
    serviceExample = {
      Nice = 10;
      CPUQuota = "50%";
      ReadWritePaths = [ "/var/lib/my-notifier" ];
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.users.users ? ${cfg.user};
        message = "services.dbackup.user is ${builtins.toJSON cfg.user}, which is not a user of this system: declare it in users.users, or name an existing one.";
      }
    ]
    ++ shared.secretAssertions {
      option = "services.dbackup.settings";
      inherit (cfg)
        settings
        environment
        user
        home
        ;
    };

    environment.systemPackages = [ cfg.package ];
    environment.etc."dbackup/config.json".source = configFile;

    systemd.services.dbackup-collect = service "dbackup-collect.service";
    systemd.timers.dbackup-collect = timer;
    systemd.services.dbackup-external = service "dbackup-external.service";
    # The status page's server (`settings.report.serve.unit = true`; off by default): long-running, so it restarts
    # with the system like any daemon, and the oneshot jobs' `serviceConfig` does not apply to it.
    systemd.services.dbackup-serve = lib.mkIf (rendered.units ? "dbackup-serve.service") (
      let
        unit = rendered.units."dbackup-serve.service";
      in
      common unit // { serviceConfig = unit.Service; }
    );

    systemd.tmpfiles.settings."10-dbackup" = tmpfiles (
      lib.genAttrs (between cfg.home seen.stateDir ++ between cfg.home seen.backupRoot) (_: dir "0755")
      // {
        ${seen.stateDir} = dir "0700";
        ${seen.backupRoot} = dir "0700";
      }
    );

    services.udev.packages = lib.optional (rendered.udev_rules != null) (
      pkgs.writeTextDir "lib/udev/rules.d/${rendered.udev_rules}" rendered.files.${rendered.udev_rules}
    );
  };
}
