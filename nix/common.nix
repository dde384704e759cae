# What the NixOS and the home-manager modules share: the `settings` option (a freeform submodule whose main parts
# are declared), the assertion that keeps secrets out of the store, the config file checked at build time, the
# options that reach into the units (environment, timerConfig, serviceConfig), and how a unit of nix/lib.nix
# becomes definitions that merge with the user's. Each module passes its own user, home and examples.
{ lib, pkgs }:

let
  inherit (lib) mkOption types;
  json = pkgs.formats.json { };
  dlib = import ./lib.nix;
  schema = builtins.fromJSON (builtins.readFile ../config/schema.json);
  enum = name: schema."$defs".${name}.enum;
in
rec {
  # A value of a unit setting.
  setting = types.oneOf [
    types.str
    types.int
    types.bool
  ];

  # A unit setting of the module's own serviceConfig and timerConfig options, merged as NixOS merges
  # systemd.services.<name>.serviceConfig: a list (a setting given on many lines) adds to other lists, a single
  # value must agree with the others (or win by priority: lib.mkForce).
  unitSetting = lib.mkOptionType {
    name = "unitSetting";
    description = "systemd setting (a list for one given on many lines)";
    descriptionClass = "noun";
    check = v: setting.check v || (builtins.isList v && builtins.all setting.check v);
    merge =
      loc: defs:
      if builtins.any (d: builtins.isList d.value) defs then
        builtins.concatMap (d: lib.toList d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  # dbackup's settings of one unit section as definitions that merge with the user's: a list (After=,
  # Environment=, ReadWritePaths=, ExecStartPre=, ...) first (lib.mkBefore), so the user's lists add to it and
  # come after it (an Environment= of the user's sets a variable last, which wins); a single value at
  # lib.mkDefault, so the user's value replaces it.
  soft = lib.mapAttrs (_: v: if builtins.isList v then lib.mkBefore v else lib.mkDefault v);

  # Drops null values from attribute sets, at every depth: `null` means "not set" (a declared option left at its
  # default, `fs_uuid = null`), and dbackup's config has no key whose value may be null.
  dropNulls =
    v:
    if builtins.isAttrs v && !lib.isDerivation v then
      lib.mapAttrs (_: dropNulls) (lib.filterAttrs (_: x: x != null) v)
    else if builtins.isList v then
      map dropNulls v
    else
      v;

  # The settings option: the config as Nix values, `backup_sets`, `destinations` and `schedule` declared (typed
  # and documented), the rest freeform JSON checked by `dbackup config check` at build time.
  settingsOption =
    { description, example }:
    mkOption {
      inherit description example;
      apply = dropNulls;
      type = types.submodule {
        freeformType = json.type;
        options = {
          backup_sets = mkOption {
            description = ''
              What to back up: each set becomes its own series of snapshots and its own archive on the drive.
              Other keys of a set (`rsync_args`, ...) are passed through; `dbackup config schema` lists them.
            '';
            example = [
              {
                name = "data";
                sources = [ "~/data" ];
                exclusions = [ "*.tmp" ];
              }
            ];
            type = types.nonEmptyListOf (
              types.submodule {
                freeformType = json.type;
                options = {
                  name = mkOption {
                    type = types.strMatching schema."$defs".BackupSet.properties.name.pattern;
                    example = "data";
                    description = ''
                      The set's name (1 to 64 letters, digits, `_`, `-` and `.`, not starting with `.` or `-`): it
                      names the snapshots and the archives.
                    '';
                  };
                  sources = mkOption {
                    type = types.nonEmptyListOf types.str;
                    example = [
                      "~/data"
                      "$DDATA/projects"
                    ];
                    description = ''
                      Files or directories to copy, as strings: absolute after `~`, `$VAR` and `''${VAR}` expand
                      (`~` is the user's home; other variables come from `environment`). A Nix path (`./data`)
                      is refused: it would copy the data into the Nix store.
                    '';
                  };
                  exclusions = mkOption {
                    type = types.listOf types.str;
                    default = [ ];
                    example = [
                      "*.log"
                      "~/data/cache/"
                    ];
                    description = ''
                      What not to copy: rsync patterns that match anywhere, or absolute, `~` or `$VAR` paths
                      inside one of the sources.
                    '';
                  };
                };
              }
            );
          };

          destinations = mkOption {
            default = [ ];
            description = ''
              Removable drives (or other mounted filesystems) that receive the external backups. Other keys of a
              destination (`priority`, `retention`, `require_mount`, `encryption`) are passed through.
            '';
            example = [
              {
                name = "T9";
                path = "/run/media/payne/T9";
                fs_label = "T9";
              }
            ];
            type = types.listOf (
              types.submodule {
                freeformType = json.type;
                options = {
                  name = mkOption {
                    type = types.strMatching schema."$defs".Destination.properties.name.pattern;
                    example = "T9";
                    description = "The destination's name, recorded on the drive.";
                  };
                  path = mkOption {
                    type = types.nullOr types.str;
                    default = null;
                    example = "/run/media/payne/T9";
                    description = ''
                      Where the drive is mounted (`~` and `$VAR` expand). The external unit is wanted by this
                      path's mount unit (`run-media-payne-T9.mount`). A bucket (`kind = "s3"` or `"b2"`) has none;
                      `dbackup config check` asks a drive for one.
                    '';
                  };
                  fs_uuid = mkOption {
                    type = types.nullOr types.str;
                    default = null;
                    example = "6BE7-A7D5";
                    description = "The filesystem UUID the drive must have (`blkid`); the udev rule matches it.";
                  };
                  fs_label = mkOption {
                    type = types.nullOr types.str;
                    default = null;
                    example = "T9";
                    description = "The filesystem label the drive must have; the udev rule matches it.";
                  };
                };
              }
            );
          };

          schedule = mkOption {
            default = { };
            description = "How often each phase runs.";
            type = types.submodule {
              options = {
                incremental = mkOption {
                  type = types.enum (enum "Incremental");
                  default = "daily";
                  description = "How often the timer runs `dbackup backup` (its `OnCalendar=`).";
                };
                full = mkOption {
                  type = types.enum (enum "Full");
                  default = "weekly";
                  description = "How often a collect compares file contents (`rsync --checksum`).";
                };
                external = mkOption {
                  type = types.enum (enum "ExternalSchedule");
                  default = "weekly";
                  description = ''
                    How often a drive gets a copy when it appears (`always`: every time; `manual`: never by itself,
                    only `systemctl start dbackup-external`).
                  '';
                };
              };
            };
          };
        };
      };
    };

  # Assertions that no file of a secret reaches the Nix store: `identity_file`, `passphrase_file` and
  # `recipients_file` of `encryption` and of each destination's `encryption`, and a bucket's `credentials_file`, must be strings (a Nix path is copied
  # into the store when the config is written) naming a file outside the store (after `~` and `$VAR` expand).
  secretAssertions =
    {
      option,
      settings,
      environment,
      user,
      home,
    }:
    let
      env = environment // {
        HOME = home;
        USER = user;
        LOGNAME = user;
      };
      keyFiles = [
        "identity_file"
        "passphrase_file"
        "recipients_file"
      ];
      places =
        [
          {
            where = "${option}.encryption";
            value = settings.encryption or null;
            keys = keyFiles;
          }
        ]
        ++ lib.concatLists (
          lib.imap0 (i: d: [
            {
              where = "${option}.destinations.${toString i}.encryption";
              value = d.encryption or null;
              keys = keyFiles;
            }
            # A bucket's keys.
            {
              where = "${option}.destinations.${toString i}";
              value = d;
              keys = [ "credentials_file" ];
            }
          ]) (settings.destinations or [ ])
        );
      check =
        where: key: v:
        let
          # A path is never turned into a string with "${...}": that would copy it into the store.
          shown = if builtins.isPath v then toString v else builtins.toJSON v;
          expanded = builtins.tryEval (dlib.expand env v);
          inStore =
            builtins.isString v
            && lib.hasPrefix builtins.storeDir (if expanded.success then expanded.value else v);
        in
        {
          assertion = builtins.isString v && !inStore;
          message =
            "${where}.${key} is ${shown}, "
            + (
              if builtins.isPath v then
                "a Nix path, which Nix copies into the store when it writes the config"
              else if builtins.isString v then
                "in the Nix store"
              else
                "not a string"
            )
            + ": the store is readable by every user of the machine, and a key, a passphrase, a recipients"
            + " or a credentials file in it is no longer yours. Write the path of the file on the machine as a string (\"~/.config/"
            + "dbackup/key.txt\"), a file you created there with mode 0600.";
        };
    in
    lib.concatMap (
      p:
      lib.optionals (builtins.isAttrs p.value) (
        map (key: check p.where key p.value.${key}) (builtins.filter (k: p.value ? ${k}) p.keys)
      )
    ) places;

  # The config, checked at build time: `dbackup config check` must accept it (schema and semantics: names, paths,
  # variables), or the system or home generation does not build. The check runs with a dbackup the build platform
  # can execute: the units' own package, or (cross-compiling) this source built for the build platform.
  configFile =
    {
      cfg,
      user,
      home,
    }:
    let
      checker =
        if pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform then
          cfg.package
        else
          pkgs.buildPackages.dbackup or (pkgs.buildPackages.callPackage ./package.nix { });
      unchecked = json.generate "dbackup-config-unchecked.json" cfg.settings;
    in
    pkgs.runCommand "dbackup-config.json"
      {
        nativeBuildInputs = [ checker ];
        env = cfg.environment;
      }
      ''
        export HOME=${lib.escapeShellArg home} USER=${lib.escapeShellArg user} LOGNAME=${lib.escapeShellArg user}
        dbackup --config ${unchecked} config check --allow-missing-files >&2
        cp ${unchecked} "$out"
      '';

  unitOptions =
    { timerExample, serviceExample }:
    {
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          DDATA = "/data";
        };
        description = ''
          Variables that `settings` uses (`$DDATA`) other than `HOME`, `USER` and `LOGNAME`: set in the units and for
          the build-time check. Like the settings, they end up in the world-readable Nix store.
        '';
      };

      timerConfig = mkOption {
        type = types.attrsOf unitSetting;
        default = { };
        example = timerExample;
        description = ''
          Settings for the `[Timer]` section of dbackup-collect.timer. They replace those from the schedule
          (`OnCalendar=` from `schedule.incremental`, `Persistent=true`, `RandomizedDelaySec=`), which are set at
          `lib.mkDefault` priority; a list adds to a list.
        '';
      };

      serviceConfig = mkOption {
        type = types.attrsOf unitSetting;
        default = { };
        example = serviceExample;
        description = ''
          Settings for the `[Service]` section of both units. A single value replaces dbackup's (`Nice=19`, ...,
          set at `lib.mkDefault` priority); a list adds to dbackup's list (`Environment`, `ReadWritePaths`,
          `ExecStartPre`, `SuccessExitStatus`): `lib.mkForce` replaces one. The same holds for the native
          `systemd` options of the units.
        '';
      };
    };
}
