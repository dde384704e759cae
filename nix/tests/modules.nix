# Evaluates nix/nixos-module.nix and nix/home-module.nix with the real module system of nixpkgs' lib
# (`lib.evalModules`: option types, defaults, mkIf, mkDefault, merging), and nix/package.nix with stand-ins for the
# few `pkgs` functions they call. Evaluates to the list of failed checks: `[ ]` when all pass.
#
#   nix-instantiate --eval --strict --json nix/tests/modules.nix --arg nixpkgsLib /path/to/nixpkgs.lib \
#     [--arg nixpkgs /path/to/nixpkgs] [--arg homeManager /path/to/home-manager]
#
# `nixpkgsLib` is a checkout of nixpkgs.lib (or of nixpkgs): a directory holding `lib/default.nix`. The options the
# modules set (systemd.services, systemd.user.services, ...) are then stand-ins with the merge rules of NixOS and
# home-manager. With `nixpkgs` (a checkout of nixpkgs: its nixos/lib/systemd-*.nix) the NixOS units are NixOS's own
# option types, and their unit files are rendered by NixOS's own code and compared with `dbackup systemd render`;
# with `homeManager` (a checkout of home-manager) the home units are home-manager's own modules/systemd.nix types.
# See README.md here.
{
  nixpkgsLib,
  nixpkgs ? null,
  homeManager ? null,
}:

let
  baseLib =
    if builtins.pathExists (nixpkgsLib + "/lib/default.nix") then
      import (nixpkgsLib + "/lib")
    else
      import nixpkgsLib;
  # home-manager extends lib with `lib.hm`; without its checkout, the one function the module calls, with the
  # behaviour of home-manager's modules/lib/assertions.nix.
  lib =
    if homeManager != null then
      import (homeManager + "/modules/lib/stdlib-extended.nix") baseLib
    else
      baseLib.extend (
        self: super: {
          hm.assertions.assertPlatform = module: pkgs: platforms: {
            assertion = self.elem pkgs.stdenv.hostPlatform.system platforms;
            message = "The module ${module} does not support your platform.";
          };
        }
      );
  dlib = import ../lib.nix;
  inherit (lib) mkOption types;

  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  drv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = store name;
    }
    // extra;
  # A package and the programs its bin/ holds (as nixpkgs' package of that name has them).
  tool = name: programs: drv name { inherit programs; };
  package = drv "dbackup-0.1.0" { meta.mainProgram = "dbackup"; };
  exe = "${package.outPath}/bin/dbackup";
  configPath = store "dbackup-config.json";

  tools = {
    rsync = tool "rsync-3.4.1" [ "rsync" ];
    util-linux = tool "util-linux-2.41" [
      "blkid"
      "findmnt"
      "logger"
      "mount"
    ];
    libnotify = tool "libnotify-0.8.6" [ "notify-send" ];
    coreutils = tool "coreutils-9.7" [
      "cat"
      "ls"
    ];
    findutils = tool "findutils-4.10.0" [ "find" ];
    gnugrep = tool "gnugrep-3.12" [ "grep" ];
    gnused = tool "gnused-4.9" [ "sed" ];
    systemd = tool "systemd-257.6" [ "systemctl" ];
    my-notifier = tool "my-notifier-1.0" [ "my-notifier" ];
  };

  # Stand-ins for the parts of nixpkgs the modules call. runCommand keeps its arguments so the checks can read them.
  mkPkgs =
    {
      system ? "x86_64-linux",
      canExecute ? true,
    }:
    tools
    // {
      dbackup = package;
      stdenv = {
        hostPlatform = {
          inherit system;
          isLinux = lib.hasSuffix "-linux" system;
        };
        buildPlatform.canExecute = _: canExecute;
      };
      buildPackages.dbackup = drv "dbackup-0.1.0-for-the-build-platform" { meta.mainProgram = "dbackup"; };
      formats.json =
        { }:
        {
          type =
            let
              valueType =
                types.nullOr (
                  types.oneOf [
                    types.bool
                    types.int
                    types.float
                    types.str
                    types.path
                    (types.attrsOf valueType)
                    (types.listOf valueType)
                  ]
                )
                // {
                  description = "JSON value";
                };
            in
            valueType;
          generate = name: value: {
            inherit name value;
            outPath = store name;
          };
        };
      formats.ini =
        { ... }:
        {
          type = types.attrsOf (types.attrsOf types.anything);
          generate = name: value: drv name { inherit value; };
        };
      runCommand = name: env: script: drv name { inherit env script; };
      writeTextDir = path: text: drv "udev-rules" { inherit path text; };
      writeText = name: text: drv name { inherit text; };
      writeTextFile = args: drv args.name { inherit (args) text; };
    };
  pkgs = mkPkgs { };

  # The real nix/package.nix, built with stand-ins: what its wrapper puts on PATH.
  built =
    let
      f = import ../package.nix;
    in
    f (
      builtins.intersectAttrs (builtins.functionArgs f) (
        tools
        // {
          inherit lib;
          stdenv.buildPlatform.canExecute = _: true;
          stdenv.hostPlatform = pkgs.stdenv.hostPlatform;
          rustPlatform.buildRustPackage = args: drv "${args.pname}-${args.version}" args;
          makeWrapper = drv "make-wrapper-hook" { };
          installShellFiles = drv "install-shell-files" { };
        }
      )
    );
  wrapperPath =
    let
      m = builtins.match ".*wrapProgram \\$out/bin/dbackup --prefix PATH : ([^ \n]+).*" built.postInstall;
    in
    if m == null then [ ] else lib.splitString ":" (lib.head m);

  # The programs a PATH holds (from the stand-in packages whose bin/ it names).
  onPath =
    path:
    lib.concatMap (
      dir:
      lib.concatMap (t: lib.optionals (dir == "${t.outPath}/bin" || dir == "${t.outPath}/sbin") t.programs) (
        builtins.attrValues tools
      )
    ) path;
  # The programs of `programs` (what the units start by name, from `render`) that `path` does not hold.
  missing = path: programs: builtins.filter (p: !(lib.hasPrefix "/" p) && !(builtins.elem p (onPath path))) programs;

  # ---- the option declarations the modules set --------------------------------------------------------------

  loose = types.attrsOf types.anything;
  looseOption = mkOption {
    type = loose;
    default = { };
  };
  listOption = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };

  # NixOS's unit settings merge (nixos/lib/systemd-unit-options.nix, `unitOption`): lists concatenate, single
  # values must be equal; priorities (mkDefault, mkForce) first.
  nixosUnitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if builtins.any (d: builtins.isList d.value) defs then
        builtins.concatMap (d: lib.toList d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };
  stubUnit = extra: {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      documentation = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      after = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      wants = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      wantedBy = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      unitConfig = mkOption {
        type = types.attrsOf nixosUnitOption;
        default = { };
      };
    }
    // extra;
  };
  stubServices = types.attrsOf (
    types.submodule (stubUnit {
      serviceConfig = mkOption {
        type = types.attrsOf nixosUnitOption;
        default = { };
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      path = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
    })
  );
  stubTimers = types.attrsOf (
    types.submodule (stubUnit {
      timerConfig = mkOption {
        type = types.attrsOf nixosUnitOption;
        default = { };
      };
    })
  );

  # NixOS's own systemd types, from a nixpkgs checkout.
  systemdUtils =
    if nixpkgs == null then
      null
    else
      let
        self = {
          lib = import (nixpkgs + "/nixos/lib/systemd-lib.nix") {
            inherit lib pkgs;
            utils = { };
            config.systemd = {
              package = tools.systemd;
              globalEnvironment = { };
              enableStrictShellChecks = false;
            };
          };
          unitOptions = import (nixpkgs + "/nixos/lib/systemd-unit-options.nix") {
            inherit lib;
            systemdUtils = self;
          };
          types = import (nixpkgs + "/nixos/lib/systemd-types.nix") {
            inherit lib pkgs;
            systemdUtils = self;
          };
        };
      in
      self;

  meta.options.meta.maintainers = listOption;

  # The NixOS options the module sets.
  nixosStubs = {
    imports = [ meta ];
    options = {
      assertions = listOption;
      systemd.services = mkOption {
        type = if systemdUtils == null then stubServices else systemdUtils.types.services;
        default = { };
      };
      systemd.timers = mkOption {
        type = if systemdUtils == null then stubTimers else systemdUtils.types.timers;
        default = { };
      };
      systemd.tmpfiles.settings = looseOption;
      services.udev.packages = listOption;
      environment.systemPackages = listOption;
      environment.etc = looseOption;
      users.users = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.home = mkOption { type = types.str; };
            options.group = mkOption {
              type = types.str;
              default = "";
            };
          }
        );
        default = { };
      };
    };
  };

  # home-manager's unit settings (modules/systemd.nix): a freeform section of `either primitive (listOf
  # primitive)` (lists concatenate, single values must be equal), and the X-SwitchMethod it declares.
  hmPrimitive = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  hmUnits =
    extra:
    types.attrsOf (
      types.submodule {
        freeformType = types.attrsOf (types.attrsOf (types.either hmPrimitive (types.listOf hmPrimitive)));
        options = extra;
      }
    );

  # The home-manager options the module sets.
  homeStubs = {
    imports = [
      meta
      (if homeManager == null then hmUnitStubs else hmSystemd)
    ];
    options = {
      assertions = listOption;
      home.username = mkOption { type = types.str; };
      home.homeDirectory = mkOption { type = types.str; };
      home.packages = listOption;
      xdg.configFile = looseOption;
    };
  };
  hmUnitStubs = {
    options.systemd.user.services = mkOption {
      type = hmUnits {
        Unit.X-SwitchMethod = mkOption {
          type = types.enum [
            null
            "reload"
            "restart"
            "stop-start"
            "keep-old"
          ];
          default = null;
        };
      };
      default = { };
    };
    options.systemd.user.timers = mkOption {
      type = hmUnits { };
      default = { };
    };
  };
  # home-manager's own modules/systemd.nix, with what it defines besides its units (its config is off:
  # systemd.user.enable = false).
  hmSystemd = {
    imports = [ (homeManager + "/modules/systemd.nix") ];
    options = {
      xdg.dataFile = looseOption;
      xdg.configHome = mkOption {
        type = types.str;
        default = "/home/payne/.config";
      };
      home.activation = looseOption;
    };
    config.systemd.user.enable = false;
  };

  eval =
    stubs: module: pkgs: config:
    lib.evalModules {
      modules = [
        stubs
        module
        config
        { _module.args.pkgs = pkgs; }
      ];
    };
  nixos = eval nixosStubs ../nixos-module.nix pkgs;
  home = eval homeStubs ../home-module.nix pkgs;
  failed = cfg: map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);

  # ---- the configurations -----------------------------------------------------------------------------------

  settings = {
    backup_root = "/srv/backup";
    backup_sets = [
      {
        name = "data";
        sources = [
          "~/data"
          "$DDATA"
        ];
      }
    ];
    schedule = {
      incremental = "daily";
      external = "weekly";
    };
    destinations = [
      {
        name = "T9";
        path = "/media/payne/T9";
        fs_label = "T9";
      }
    ];
  };
  # What the settings option makes of them: its declared defaults written out, nulls left out.
  written = lib.recursiveUpdate settings {
    backup_sets = [
      {
        name = "data";
        sources = [
          "~/data"
          "$DDATA"
        ];
        exclusions = [ ];
      }
    ];
    schedule.full = "weekly";
  };
  manual = lib.recursiveUpdate settings { schedule.external = "manual"; };
  payne = {
    users.users.payne = {
      home = "/home/payne";
      group = "users";
    };
  };

  # services.dbackup for payne (with DDATA) with `settings`.
  dbackupFor = settings: {
    services.dbackup = {
      enable = true;
      user = "payne";
      inherit settings;
      environment.DDATA = "/data";
    };
  };
  # That, and `extra` (other top-level options) beside it.
  nixosWithAnd = settings: extra: nixos (payne // dbackupFor settings // extra);
  nixosWith = settings: nixosWithAnd settings { };
  n1 = nixosWith settings;
  n1c = n1.config;
  # No backup root: the default, ~/.local/share/dbackup.
  nDefaultRoot = nixosWith (builtins.removeAttrs settings [ "backup_root" ]);
  # A backup root with characters systemd-tmpfiles reads specially (`%u`, `\b`, a quote).
  nOdd = nixosWith (settings // { backup_root = "/srv/100%users/a\\b'c"; });
  renderedSystem = dlib.render {
    scope = "system";
    inherit exe;
    settings = written;
    configFile = configPath;
    user = "payne";
    home = "/home/payne";
    environment.DDATA = "/data";
  };
  collect = n1c.systemd.services.dbackup-collect;
  external = n1c.systemd.services.dbackup-external;
  timer = n1c.systemd.timers.dbackup-collect;
  udev = n1c.services.udev.packages;

  # Overrides through the module's options and through the native ones, which merge with dbackup's settings.
  n2 = nixos (
    payne
    // {
      services.dbackup = {
        enable = true;
        user = "payne";
        settings = manual;
        environment.DDATA = "/data";
        timerConfig.OnCalendar = "*-*-* 02:30:00";
        serviceConfig = {
          Nice = 10;
          Environment = [ "TZ=UTC" ];
        };
      };
      systemd.services.dbackup-external.serviceConfig = {
        CPUQuota = "50%";
        Environment = [ "LANG=C.UTF-8" ];
        ReadWritePaths = [ "/var/lib/my-notifier" ];
      };
    }
  );
  n2c = n2.config;

  # dbackup's single values give way to a native definition; its lists take the native lists in.
  n4 = nixosWithAnd settings {
    systemd.services.dbackup-collect.serviceConfig.Nice = "10";
    systemd.services.dbackup-external.serviceConfig.ExecStartPre = [ "/run/current-system/sw/bin/true" ];
    systemd.services.dbackup-external.unitConfig.RequiresMountsFor = [ "/data" ];
    systemd.timers.dbackup-collect.timerConfig.OnCalendar = "hourly";
  };
  n4c = n4.config;

  n3 = nixos {
    services.dbackup = {
      enable = true;
      user = "payne";
      settings = lib.recursiveUpdate settings {
        destinations = [
          {
            name = "T9";
            path = "~/mnt/my-T9";
            fs_uuid = "6be7-a7d5";
          }
        ];
      };
      environment.DDATA = "/data";
    };
  };

  off = nixos { services.dbackup.user = "payne"; };

  # The status page's server, asked for in the settings.
  serving = lib.recursiveUpdate settings { report.serve.unit = true; };
  # A bucket beside the drive: no path, no mount, no rule.
  nBucket = nixosWith (
    settings
    // {
      destinations = settings.destinations ++ [
        {
          name = "offsite";
          kind = "s3";
          bucket = "bucket1";
          endpoint = "https://s3.example.org";
          region = "garage";
          allow_unencrypted = true;
        }
      ];
    }
  );
  nServe = nixosWith serving;
  hServe = home {
    home.username = "payne";
    home.homeDirectory = "/home/payne";
    services.dbackup = {
      enable = true;
      settings = serving;
      environment.DDATA = "/data";
    };
  };

  badSettings = nixos {
    services.dbackup = {
      enable = true;
      user = "payne";
      settings.backup_sets = x: x;
    };
  };
  refused =
    s:
    !(builtins.tryEval (
      builtins.deepSeq
        (nixos (
          payne
          // {
            services.dbackup = {
              enable = true;
              user = "payne";
              settings = s;
            };
          }
        )).config.services.dbackup.settings
        true
    )).success;

  # Every notification sink, and secrets named every way there is.
  notified = lib.recursiveUpdate settings {
    notifications = {
      desktop = true;
      command = [
        "logger"
        "-t"
        "dbackup"
      ];
      http = "https://ntfy.sh/dbackup-topic";
    };
  };
  n5 = nixos (
    payne
    // {
      services.dbackup = {
        enable = true;
        user = "payne";
        settings = notified;
        environment.DDATA = "/data";
      };
    }
  );
  # A notifier given by name, on the unit's PATH through the native `path` option.
  n6 = nixos (
    payne
    // {
      services.dbackup = {
        enable = true;
        user = "payne";
        settings = lib.recursiveUpdate settings { notifications.command = [ "my-notifier" ]; };
        environment.DDATA = "/data";
      };
      systemd.services.dbackup-collect.path = [ tools.my-notifier ];
    }
  );
  secrets = nixos (
    payne
    // {
      services.dbackup = {
        enable = true;
        user = "payne";
        environment = {
          DDATA = "/data";
          KEYS = "/nix/store/11111111111111111111111111111111-keys";
        };
        settings = settings // {
          # A path that does not exist: if anything copied it into the store, the evaluation would fail.
          encryption = {
            identity_file = ./no-such-identity.txt;
            passphrase_file = "/nix/store/22222222222222222222222222222222-pass";
          };
          destinations = [
            {
              name = "T9";
              path = "/media/payne/T9";
              encryption.recipients_file = "$KEYS/recipients.txt";
            }
            {
              name = "spare";
              path = "/media/payne/spare";
              encryption.identity_file = "~/.config/dbackup/key.txt";
            }
            {
              # A bucket's keys (`~/.aws/credentials` format): a secret file like the others.
              name = "offsite";
              path = "/unused";
              kind = "s3";
              credentials_file = ./no-such-credentials;
            }
          ];
        };
      };
    }
  );
  noUser = nixos (dbackupFor settings);
  cross = eval nixosStubs ../nixos-module.nix (mkPkgs { canExecute = false; }) (payne // dbackupFor settings);

  h1 = home {
    home.username = "payne";
    home.homeDirectory = "/home/payne";
    services.dbackup = {
      enable = true;
      settings = lib.recursiveUpdate settings {
        destinations = [
          {
            name = "T9";
            path = "/run/media/payne/T9";
            fs_label = "T9";
          }
        ];
      };
      environment.DDATA = "/data";
    };
  };
  h1c = h1.config;
  renderedUser = dlib.render {
    scope = "user";
    inherit exe;
    settings = h1.config.services.dbackup.settings;
    configFile = configPath;
    user = "payne";
    home = "/home/payne";
    environment.DDATA = "/data";
  };

  h2 = home {
    home.username = "payne";
    home.homeDirectory = "/home/payne";
    services.dbackup = {
      enable = true;
      settings = manual;
      environment.DDATA = "/data";
      timerConfig.OnCalendar = "12:00";
      serviceConfig.Environment = [ "TZ=UTC" ];
    };
    systemd.user.services.dbackup-collect.Service.Nice = 5;
    systemd.user.services.dbackup-external.Service.Environment = [ "LANG=C.UTF-8" ];
  };
  h3 = home {
    home.username = "payne";
    home.homeDirectory = "/home/payne";
    services.dbackup = {
      enable = true;
      inherit settings;
      environment.DDATA = "/data";
    };
    systemd.user.services.dbackup-external.Service.ExecStartPre = [ "/bin/true" ];
  };
  hDarwin = eval homeStubs ../home-module.nix (mkPkgs { system = "aarch64-darwin"; }) {
    home.username = "payne";
    home.homeDirectory = "/Users/payne";
    services.dbackup = {
      enable = true;
      settings = settings // {
        destinations = [ ];
        backup_root = "/Users/payne/backups";
      };
      environment.DDATA = "/data";
    };
  };

  # A home unit as values: home-manager's empty defaults left out (as home-manager leaves them out of the file),
  # every value a list.
  homeUnit =
    unit:
    lib.filterAttrs (_: s: s != { }) (
      lib.mapAttrs (
        _: section:
        lib.mapAttrs (_: lib.toList) (lib.filterAttrs (_: v: v != null && v != [ ]) section)
      ) unit
    );
  switchKept = unit: unit // { Unit = unit.Unit // { X-SwitchMethod = [ "keep-old" ]; }; };

  # ---- unit files, read back as sets of values -----------------------------------------------------------------

  # `Section.Key` -> the sorted values of its lines; settings NixOS writes on one line (After=, WantedBy=,
  # Documentation=) split into words.
  parseUnit =
    text:
    let
      lines = builtins.filter (l: l != "" && !(lib.hasPrefix "#" l)) (lib.splitString "\n" text);
      step =
        acc: line:
        let
          header = builtins.match "\\[(.*)]" line;
          kv = builtins.match "([^=]+)=(.*)" line;
        in
        if header != null then
          acc // { section = lib.head header; }
        else if kv != null then
          let
            key = "${acc.section}.${lib.elemAt kv 0}";
            value = lib.elemAt kv 1;
            values =
              if
                builtins.elem (lib.elemAt kv 0) [
                  "After"
                  "WantedBy"
                  "Documentation"
                ]
              then
                builtins.filter (w: w != "") (lib.splitString " " value)
              else
                [ value ];
          in
          acc // { settings = acc.settings // { ${key} = (acc.settings.${key} or [ ]) ++ values; }; }
        else
          throw "not a unit line: ${line}";
    in
    lib.mapAttrs (_: lib.sort (a: b: a < b)) (builtins.foldl' step {
      section = "";
      settings = { };
    } lines).settings;
  # What NixOS adds to a unit that `render` does not write: PATH from `path`, and its switch markers.
  nixosOnly =
    u:
    lib.filterAttrs (k: _: k != "Service.X-RestartIfChanged") (
      u
      // lib.optionalAttrs (u ? "Service.Environment") {
        "Service.Environment" = builtins.filter (e: !(lib.hasPrefix "\"PATH=" e)) u."Service.Environment";
      }
    );

  # A check that throws (a module error: conflicting definitions, a failed assertion of the module system) fails
  # alone, with what it threw left to --show-trace.
  check =
    name: got: want:
    let
      r = builtins.tryEval (builtins.deepSeq got got);
    in
    {
      inherit name want;
      got = if r.success then r.value else "<evaluation failed>";
      ok = r.success && r.value == want;
    };
  checks = [
    # NixOS: the units are nix/lib.nix's, mapped onto systemd.services options.
    (check "nixos serve: off by default" (n1c.systemd.services ? dbackup-serve) false)
    (check "nixos serve: the unit when report.serve.unit" nServe.config.systemd.services.dbackup-serve.serviceConfig
      (dlib.render {
        scope = "system";
        inherit exe;
        settings = serving;
        configFile = configPath;
        user = "payne";
        home = "/home/payne";
        environment.DDATA = "/data";
      }).units."dbackup-serve.service".Service)
    (check "nixos serve: started with the system" nServe.config.systemd.services.dbackup-serve.wantedBy [ "multi-user.target" ])
    (check "home serve: off by default" (h1c.systemd.user.services ? dbackup-serve) false)
    (check "home serve: the unit when report.serve.unit" (lib.toList hServe.config.systemd.user.services.dbackup-serve.Service.ExecStart)
      [ "${exe} --config ${configPath} serve" ])
    (check "nixos collect ExecStart" collect.serviceConfig.ExecStart "${exe} --config ${configPath} backup")
    (check "nixos collect runs as the user" collect.serviceConfig.User "payne")
    (check "nixos collect serviceConfig is lib.render's" collect.serviceConfig
      renderedSystem.units."dbackup-collect.service".Service
    )
    (check "nixos collect unitConfig" collect.unitConfig (
      { RequiresMountsFor = [ "/srv/backup" ]; }
      // lib.optionalAttrs (systemdUtils != null) {
        Description = "dbackup: snapshot every backup set, then copy to a present drive when due";
        Documentation = "man:dbackup(1)";
      }
    ))
    (check "nixos services are not restarted by a rebuild" [
      collect.restartIfChanged
      external.restartIfChanged
    ] [ false false ])
    (check "nixos timer"
      {
        inherit (timer) wantedBy;
        inherit (timer.timerConfig) OnCalendar Persistent RandomizedDelaySec;
      }
      {
        wantedBy = [ "timers.target" ];
        OnCalendar = "daily";
        Persistent = "true";
        RandomizedDelaySec = "1h";
      }
    )
    (check "nixos external is wanted by the drive's mount" external.wantedBy [ "media-payne-T9.mount" ])
    (check "nixos external waits for collect and the mount" external.after [
      "dbackup-collect.service"
      "media-payne-T9.mount"
    ])
    (check "nixos external serviceConfig is lib.render's" external.serviceConfig
      renderedSystem.units."dbackup-external.service".Service
    )
    (check "nixos udev rule file" (map (p: p.path) udev) [ "lib/udev/rules.d/99-dbackup.rules" ])
    (check "nixos udev rule text is lib.render's" (map (p: p.text) udev) [
      renderedSystem.files."99-dbackup.rules"
    ])
    (check "nixos udev rule wants the unit" (lib.hasInfix ''ENV{ID_FS_LABEL}=="T9", TAG+="systemd", ENV{SYSTEMD_WANTS}+="dbackup-external.service"'' (
      lib.head udev
    ).text) true)
    (check "nixos config checked at build time" (lib.hasInfix "config check --allow-missing-files" n1c.environment.etc."dbackup/config.json".source.script) true)
    (check "nixos settings written as JSON, with the declared defaults" n1c.services.dbackup.settings written)
    (check "nixos package installed" (map (p: p.name) n1c.environment.systemPackages) [ "dbackup-0.1.0" ])
    (check "nixos manual: no udev rule" n2c.services.udev.packages [ ])
    (check "nixos manual: no trigger" n2c.systemd.services.dbackup-external.wantedBy [ ])
    (check "nixos manual: runs dbackup external" n2c.systemd.services.dbackup-external.serviceConfig.ExecStart "${exe} --config ${configPath} external")
    (check "nixos home defaults to /home/<user>, ~ expands to it" n3.config.systemd.services.dbackup-external.wantedBy [
      "home-payne-mnt-my\\x2dT9.mount"
    ])
    (check "nixos uuid rule ignores case" (lib.hasInfix ''ENV{ID_FS_UUID}=="6[Bb][Ee]7-[Aa]7[Dd]5"'' (lib.head n3.config.services.udev.packages).text) true)
    (check "nixos disabled: nothing"
      {
        services = off.config.systemd.services;
        timers = off.config.systemd.timers;
        udev = off.config.services.udev.packages;
      }
      {
        services = { };
        timers = { };
        udev = [ ];
      }
    )
    (check "nixos settings must be JSON" (builtins.tryEval (builtins.deepSeq badSettings.config.services.dbackup.settings true)).success false)
    (check "nixos settings docs warn about secrets" (lib.hasInfix "Never put secrets here" n1.options.services.dbackup.settings.description && lib.hasInfix "every user" n1.options.services.dbackup.settings.description) true)

    # Issue 14, item 1: overrides merge with dbackup's settings instead of replacing them (main built serviceConfig
    # as `unit.Service // cfg.serviceConfig`: Environment = [ "TZ=UTC" ] dropped DDATA=/data, an ExecStartPre
    # dropped the wait for the drive, and a native serviceConfig.Nice conflicted with dbackup's 19).
    (check "nixos serviceConfig: single values replace dbackup's, lists add to them"
      {
        nice = map (s: n2c.systemd.services.${s}.serviceConfig.Nice) [
          "dbackup-collect"
          "dbackup-external"
        ];
        collectEnvironment = n2c.systemd.services.dbackup-collect.serviceConfig.Environment;
        externalEnvironment = n2c.systemd.services.dbackup-external.serviceConfig.Environment;
        readWrite = n2c.systemd.services.dbackup-external.serviceConfig.ReadWritePaths;
        quota = n2c.systemd.services.dbackup-external.serviceConfig.CPUQuota;
        onCalendar = n2c.systemd.timers.dbackup-collect.timerConfig.OnCalendar;
        persistent = n2c.systemd.timers.dbackup-collect.timerConfig.Persistent;
      }
      {
        nice = [
          10
          10
        ];
        collectEnvironment = [
          "DDATA=/data"
          "TZ=UTC"
        ];
        externalEnvironment = [
          "DDATA=/data"
          "TZ=UTC"
          "LANG=C.UTF-8"
        ];
        readWrite = [
          "/srv/backup"
          "/home/payne/.local/state/dbackup"
          "-/media/payne/T9"
          "/var/lib/my-notifier"
        ];
        quota = "50%";
        onCalendar = "*-*-* 02:30:00";
        persistent = "true";
      }
    )
    (check "nixos native options: single values replace dbackup's, lists add to them"
      {
        nice = n4c.systemd.services.dbackup-collect.serviceConfig.Nice;
        pre = n4c.systemd.services.dbackup-external.serviceConfig.ExecStartPre;
        mounts = n4c.systemd.services.dbackup-external.unitConfig.RequiresMountsFor;
        onCalendar = n4c.systemd.timers.dbackup-collect.timerConfig.OnCalendar;
        environment = n4c.systemd.services.dbackup-collect.serviceConfig.Environment;
      }
      {
        nice = "10";
        pre = [
          "${exe} --config ${configPath} systemd wait-for-drive --timeout 60"
          "/run/current-system/sw/bin/true"
        ];
        mounts = [
          "/srv/backup"
          "/data"
        ];
        onCalendar = "hourly";
        environment = [ "DDATA=/data" ];
      }
    )

    # Item 2: no secret reaches the store (main's JSON type took `identity_file = ./key.txt` and copied the key in).
    (check "nixos secrets: Nix paths and store paths refused, with why"
      (map (m: {
        where = lib.head (lib.splitString " is " m);
        path = lib.hasInfix "a Nix path, which Nix copies into the store" m;
        store = lib.hasInfix "in the Nix store" m;
        why = lib.hasInfix "readable by every user of the machine" m;
      }) (failed secrets.config))
      [
        {
          where = "services.dbackup.settings.encryption.identity_file";
          path = true;
          store = false;
          why = true;
        }
        {
          where = "services.dbackup.settings.encryption.passphrase_file";
          path = false;
          store = true;
          why = true;
        }
        {
          where = "services.dbackup.settings.destinations.0.encryption.recipients_file";
          path = false;
          store = true;
          why = true;
        }
        {
          where = "services.dbackup.settings.destinations.2.credentials_file";
          path = true;
          store = false;
          why = true;
        }
      ]
    )
    (check "nixos secrets: the path named in the message, not copied" (lib.any (lib.hasInfix "/nix/tests/no-such-identity.txt") (failed secrets.config)) true)
    (check "nixos: no assertion fails for a good config" (failed n1c) [ ])
    # A bucket is a destination without a path (before: the typed `path` option had no default, so a bucket could not
    # be configured, and nix/lib.nix read it as a drive).
    (check "nixos: a bucket beside a drive evaluates, the drive alone wanted and writable"
      {
        failed = failed nBucket.config;
        wantedBy = nBucket.config.systemd.services.dbackup-external.wantedBy;
        writable = nBucket.config.systemd.services.dbackup-external.serviceConfig.ReadWritePaths;
        bucketPath = (lib.last nBucket.config.services.dbackup.settings.destinations) ? path;
        # A run that uploads waits for the network (a timer fires at boot).
        online = map (n: {
          inherit (nBucket.config.systemd.services.${n}) wants;
          after = lib.elem "network-online.target" nBucket.config.systemd.services.${n}.after;
        }) [ "dbackup-collect" "dbackup-external" ];
        offline = n1c.systemd.services.dbackup-collect.wants;
      }
      {
        failed = [ ];
        wantedBy = external.wantedBy;
        writable = external.serviceConfig.ReadWritePaths;
        bucketPath = false;
        online = lib.genList (_: { wants = [ "network-online.target" ]; after = true; }) 2;
        offline = [ ];
      }
    )

    # Item 4: what the enabled sinks start is on the units' PATH (main's wrapper had only rsync and util-linux, so
    # notify-send was not found, and https notifications ran curl, which nothing provided).
    (check "package wrapper puts what dbackup starts on PATH" (onPath wrapperPath) [
      "rsync"
      "blkid"
      "findmnt"
      "logger"
      "mount"
      "notify-send"
    ])
    (check "nixos every program the units start is on their PATH"
      (
        let
          r = dlib.render {
            scope = "system";
            inherit exe;
            settings = n5.config.services.dbackup.settings;
            user = "payne";
            home = "/home/payne";
            environment.DDATA = "/data";
          };
        in
        {
          inherit (r) programs;
          missing = missing (wrapperPath ++ lib.splitString ":" (
            n5.config.systemd.services.dbackup-collect.environment.PATH or ""
          )) r.programs;
        }
      )
      {
        programs = [
          "blkid"
          "logger"
          "notify-send"
          "rsync"
        ];
        missing = [ ];
      }
    )
    (check "home every program the units start is on their PATH" (missing wrapperPath renderedUser.programs) [ ])

    # Item 5: the units may write only the root, the run log's directory and the drives, which exist beforehand.
    (check "nixos the directories the units write exist (tmpfiles)" (n1c.systemd.tmpfiles.settings."10-dbackup" or "<missing>") {
      "/home/payne/.local".d = {
        mode = ":0755";
        user = ":payne";
        group = ":users";
      };
      "/home/payne/.local/state".d = {
        mode = ":0755";
        user = ":payne";
        group = ":users";
      };
      "/home/payne/.local/state/dbackup".d = {
        mode = ":0700";
        user = ":payne";
        group = ":users";
      };
      "/srv/backup".d = {
        mode = ":0700";
        user = ":payne";
        group = ":users";
      };
    })
    # systemd-tmpfiles expands specifiers and backslash escapes in a path: a backup root "/srv/100%users" was made as
    # "/srv/100rootsers" (and "/srv/a\b" as "/srv/ab"; a `'` ended NixOS's quoting of the path and tmpfiles refused
    # the line), so the real one never existed and the units, whose ReadWritePaths= needs it, could not start. The
    # paths are now escaped for tmpfiles.
    (check "nixos tmpfiles paths keep % and \\ literal" (builtins.attrNames (nOdd.config.systemd.tmpfiles.settings."10-dbackup" or { })) [
      "/home/payne/.local"
      "/home/payne/.local/state"
      "/home/payne/.local/state/dbackup"
      "/srv/100%%users/a\\\\b\\'c"
    ])
    # The default backup root (~/.local/share/dbackup): the directories between the home and it belong to the user.
    # Before, only those above the run log's directory did, so systemd-tmpfiles made ~/.local/share itself, owned by
    # root (the user's programs could no longer write there), then refused the unsafe path (payne -> root) and never
    # made the backup root, which the units need.
    (check "nixos the directories up to the default backup root belong to the user" (
      lib.mapAttrs (_: e: e.d.user) (nDefaultRoot.config.systemd.tmpfiles.settings."10-dbackup" or { })
    ) {
      "/home/payne/.local" = ":payne";
      "/home/payne/.local/share" = ":payne";
      "/home/payne/.local/share/dbackup" = ":payne";
      "/home/payne/.local/state" = ":payne";
      "/home/payne/.local/state/dbackup" = ":payne";
    })
    (check "nixos units hardened" (lib.filterAttrs (k: _: lib.hasPrefix "Protect" k || k == "ReadWritePaths") collect.serviceConfig) {
      ProtectSystem = "strict";
      ProtectKernelTunables = "yes";
      ProtectKernelModules = "yes";
      ProtectKernelLogs = "yes";
      ProtectControlGroups = "yes";
      ProtectHostname = "yes";
      ReadWritePaths = [
        "/srv/backup"
        "/home/payne/.local/state/dbackup"
        "-/media/payne/T9"
      ];
    })

    # Item 6: nixpkgs' conventions.
    (check "package option is mkPackageOption's" {
      default = n1.options.services.dbackup.package.defaultText.text;
      type = n1.options.services.dbackup.package.type.name;
    } {
      default = "pkgs.dbackup";
      type = "package";
    })
    (check "enable option is a short noun" [
      n1.options.services.dbackup.enable.description
      h1.options.services.dbackup.enable.description
    ] [ "Whether to enable dbackup backups." "Whether to enable dbackup backups." ])
    (check "settings: backup_sets, destinations and schedule declared, documented"
      (
        let
          sub = n1.options.services.dbackup.settings.type.getSubOptions [ ];
        in
        map (o: (sub.${o}.description or "") != "") [
          "backup_sets"
          "destinations"
          "schedule"
        ]
      )
      [
        true
        true
        true
      ]
    )
    (check "settings: typed (a bad schedule, set name or source is refused, and a Nix path as source)"
      (map refused [
        settings
        (settings // { schedule.incremental = "nightly"; })
        (settings // {
          backup_sets = [
            {
              name = ".hidden";
              sources = [ "/a" ];
            }
          ];
        })
        (settings // {
          backup_sets = [
            {
              name = "a";
              sources = [ ./. ];
            }
          ];
        })
        (settings // {
          backup_sets = [
            {
              name = "a";
              sources = [ ];
            }
          ];
        })
      ])
      [
        false
        true
        true
        true
        true
      ]
    )
    (check "settings: the schedule's values are the schema's"
      (
        let
          sub = n1.options.services.dbackup.settings.type.getSubOptions [ ];
          schedule = if sub ? schedule then sub.schedule.type.getSubOptions [ ] else { };
        in
        map (o: schedule.${o}.type.functor.payload.values or schedule.${o}.type.functor.payload or null) [
          "incremental"
          "full"
          "external"
        ]
      )
      (
        map (d: (builtins.fromJSON (builtins.readFile ../../config/schema.json))."$defs".${d}.enum) [
          "Incremental"
          "Full"
          "ExternalSchedule"
        ]
      )
    )
    (check "nixos assertion: the user exists" (failed noUser.config) [
      "services.dbackup.user is \"payne\", which is not a user of this system: declare it in users.users, or name an existing one."
    ])
    (check "home assertion: Linux only" (failed hDarwin.config) [
      "The module services.dbackup does not support your platform.${
        if homeManager == null then "" else " It only supports\n\n${lib.concatMapStringsSep "\n" (p: "  - ${p}") (lib.sort (a: b: a < b) lib.platforms.linux)}"
      }"
    ])
    (check "meta.maintainers present, empty" (map (d: d.value) (builtins.filter (d: lib.hasSuffix "-module.nix" (toString d.file)) (n1.options.meta.maintainers.definitionsWithLocations or [ ] ++ h1.options.meta.maintainers.definitionsWithLocations or [ ]))) [ [ ] [ ] ])
    (check "config check: the environment through `env`" (n1c.environment.etc."dbackup/config.json".source.env.env or "<missing>") { DDATA = "/data"; })
    (check "config check: the units' own binary where the build runs it" (map (p: p.name) n1c.environment.etc."dbackup/config.json".source.env.nativeBuildInputs or [ ]) [ "dbackup-0.1.0" ])
    (check "config check: cross-compiling, the build platform's binary" (map (p: p.name) cross.config.environment.etc."dbackup/config.json".source.env.nativeBuildInputs or [ ]) [ "dbackup-0.1.0-for-the-build-platform" ])

    # home-manager: user units wanted by the drive's mount unit; no udev rule, no User=.
    (check "home units are lib.render's, but for X-SwitchMethod (the one intended difference)"
      {
        collect = homeUnit h1c.systemd.user.services.dbackup-collect;
        external = homeUnit h1c.systemd.user.services.dbackup-external;
        timer = homeUnit h1c.systemd.user.timers.dbackup-collect;
      }
      {
        collect = switchKept (homeUnit renderedUser.units."dbackup-collect.service");
        external = switchKept (homeUnit renderedUser.units."dbackup-external.service");
        timer = homeUnit renderedUser.units."dbackup-collect.timer";
      }
    )
    # Item 3: a switch never restarts a running backup.
    (check "home switch keeps a running backup" (map (s: h1c.systemd.user.services.${s}.Unit.X-SwitchMethod or null) [
      "dbackup-collect"
      "dbackup-external"
    ]) [ "keep-old" "keep-old" ])
    (check "home external wanted by the mount" h1c.systemd.user.services.dbackup-external.Install.WantedBy [ "run-media-payne-T9.mount" ])
    (check "home units have no User=" (h1c.systemd.user.services.dbackup-collect.Service ? User) false)
    (check "home config linked for commands run by hand" h1c.xdg.configFile."dbackup/config.json".source.outPath configPath)
    (check "home config check runs as the user" (lib.hasInfix "export HOME=${lib.escapeShellArg "/home/payne"} USER=${lib.escapeShellArg "payne"}" h1c.xdg.configFile."dbackup/config.json".source.script) true)
    (check "home manual: no trigger" ((h2.config.systemd.user.services.dbackup-external.Install.WantedBy or [ ]) == [ ]) true)
    (check "home overrides: single values replace dbackup's, lists add to them"
      {
        onCalendar = h2.config.systemd.user.timers.dbackup-collect.Timer.OnCalendar;
        nice = h2.config.systemd.user.services.dbackup-collect.Service.Nice;
        collectEnvironment = h2.config.systemd.user.services.dbackup-collect.Service.Environment;
        externalEnvironment = h2.config.systemd.user.services.dbackup-external.Service.Environment;
        pre = h3.config.systemd.user.services.dbackup-external.Service.ExecStartPre;
      }
      {
        onCalendar = "12:00";
        nice = 5;
        collectEnvironment = [
          "DDATA=/data"
          "TZ=UTC"
        ];
        externalEnvironment = [
          "DDATA=/data"
          "TZ=UTC"
          "LANG=C.UTF-8"
        ];
        pre = [
          "${exe} --config ${configPath} systemd wait-for-drive --timeout 60"
          "/bin/true"
        ];
      }
    )
    (check "home secrets refused too" (map (m: lib.head (lib.splitString " is " m)) (failed (home {
      home.username = "payne";
      home.homeDirectory = "/home/payne";
      services.dbackup = {
        enable = true;
        settings = settings // { encryption.identity_file = ./no-such-identity.txt; };
        environment.DDATA = "/data";
      };
    }).config)) [ "services.dbackup.settings.encryption.identity_file" ])
    (check "home: no assertion fails for a good config" (failed h1c) [ ])

    # The flake: its outputs, and its modules default to its own package.
    (check "flake outputs"
      {
        packages = builtins.attrNames flake.packages.x86_64-linux;
        app = flake.apps.x86_64-linux.default.program;
        modules = map builtins.isFunction [
          flake.nixosModules.default
          flake.homeManagerModules.default
          flake.homeModules.default
        ];
        overlay = (flake.overlays.default flake.packages.x86_64-linux.default.file { }) ? dbackup;
        shell = flake.devShells.aarch64-linux.default.name;
        formatter = flake.formatter.x86_64-linux.name;
        checks = builtins.attrNames flake.checks.x86_64-linux;
        lib = flake.lib.mountUnit "/media/payne/T9";
      }
      {
        packages = [
          "dbackup"
          "default"
        ];
        app = "${store "dbackup-0.1.0"}/bin/dbackup";
        modules = [
          true
          true
          true
        ];
        overlay = true;
        shell = "dbackup-shell";
        formatter = "nixfmt-tree";
        checks = [
          "lib"
          "modules"
          "package"
          "vm"
        ];
        lib = "media-payne-T9.mount";
      }
    )
    (check "flake module runs the flake's package" viaFlake.config.systemd.services.dbackup-collect.serviceConfig.ExecStart
      "${store "dbackup-0.1.0"}/bin/dbackup --config ${configPath} backup"
    )
    # (checks.modules is this file: evaluating it here would never end.)
    (check "flake lib check evaluates" flake.checks.x86_64-linux.lib.script "touch $out")
    (check "vm test"
      {
        inherit (vmTest) name;
        imports = map builtins.isFunction (vmTest.nodes.machine { }).imports;
        user = (vmTest.nodes.machine { }).services.dbackup.user;
        plugs = lib.hasInfix "device_add usb-storage" vmTest.testScript;
      }
      {
        name = "dbackup";
        imports = [ true ];
        user = "payne";
        plugs = true;
      }
    )
    (check "home settings docs warn about secrets" (lib.hasInfix "Never put secrets here" h1.options.services.dbackup.settings.description) true)
  ]
  # With nixpkgs' own systemd code: NixOS writes the unit files `dbackup systemd render --system` writes (but for
  # PATH and its switch markers), and the native `path` option puts a notifier on the units' PATH.
  ++ lib.optionals (systemdUtils != null) [
    (check "nixos unit files are render's"
      {
        collect = nixosOnly (parseUnit (systemdUtils.lib.serviceToUnit collect).text);
        external = nixosOnly (parseUnit (systemdUtils.lib.serviceToUnit external).text);
        timer = parseUnit (systemdUtils.lib.timerToUnit timer).text;
      }
      {
        collect = parseUnit renderedSystem.files."dbackup-collect.service";
        external = parseUnit renderedSystem.files."dbackup-external.service";
        timer = parseUnit renderedSystem.files."dbackup-collect.timer";
      }
    )
    (check "nixos a notifier on the native path is on the units' PATH"
      (missing (wrapperPath ++ lib.splitString ":" n6.config.systemd.services.dbackup-collect.environment.PATH) [
        "my-notifier"
      ])
      [ ]
    )
  ];

  # The flake's outputs, with a stand-in nixpkgs: nixpkgs.lib, and stub packages that record what they are given.
  flakeNixpkgs = {
    inherit lib;
    outPath = nixpkgsLib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
      system:
      let
        stubs = lib.genAttrs [
          "cargo"
          "rustc"
          "clippy"
          "rustfmt"
          "just"
          "rsync"
          "exfatprogs"
          "exfat"
          "e2fsprogs"
          "xfsprogs"
          "btrfs-progs"
          "util-linux"
          "acl"
          "attr"
          "systemd"
          "nixfmt"
          "nixfmt-tree"
        ] (n: drv n { });
      in
      stubs
      // {
        stdenv.hostPlatform.system = system;
        callPackage = file: args: drv "dbackup-0.1.0" { inherit file; };
        mkShell = args: drv "dbackup-shell" { inherit args; };
        runCommand = name: env: script: drv name { inherit script; };
        testers.runNixOSTest = test: drv "vm-test" { inherit test; };
      }
    );
  };
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = flakeNixpkgs;
  };
  vmTest = flake.checks.x86_64-linux.vm.test {
    pkgs = flakeNixpkgs.legacyPackages.x86_64-linux;
    inherit lib;
  };
  viaFlake = nixos (
    payne
    // {
      imports = [ flake.nixosModules.default ];
      services.dbackup = {
        enable = true;
        user = "payne";
        inherit settings;
        environment.DDATA = "/data";
      };
    }
  );
in
map (c: { inherit (c) name got want; }) (builtins.filter (c: !c.ok) checks)
