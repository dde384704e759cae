# Evaluates nix/nixos-module.nix and nix/home-module.nix with the real module system of nixpkgs' lib
# (`lib.evalModules`: option types, defaults, mkIf, merging), against stand-ins for the NixOS and home-manager options
# the modules set and the few `pkgs` functions they call. Evaluates to the list of failed checks: `[ ]` when all pass.
#
#   nix-instantiate --eval --strict --json nix/tests/modules.nix --arg nixpkgsLib /path/to/nixpkgs.lib
#
# `nixpkgsLib` is a checkout of nixpkgs.lib (or of nixpkgs): a directory holding `lib/default.nix`. See README.md here.
{ nixpkgsLib }:

let
  lib =
    if builtins.pathExists (nixpkgsLib + "/lib/default.nix") then
      import (nixpkgsLib + "/lib")
    else
      import nixpkgsLib;
  dlib = import ../lib.nix;
  inherit (lib) mkOption types;

  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  package = {
    type = "derivation";
    name = "dbackup-0.1.0";
    outPath = store "dbackup-0.1.0";
    meta.mainProgram = "dbackup";
  };
  exe = "${package.outPath}/bin/dbackup";
  configPath = store "dbackup-config.json";

  # Stand-ins for the parts of nixpkgs the modules call. runCommand keeps its arguments so the checks can read them.
  pkgs = {
    dbackup = package;
    stdenv.hostPlatform.system = "x86_64-linux";
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
    runCommand = name: env: script: {
      inherit name env script;
      outPath = store name;
    };
    writeTextDir = path: text: {
      inherit path text;
      outPath = store "udev-rules";
    };
  };

  loose = types.attrsOf types.anything;
  looseOption = mkOption {
    type = loose;
    default = { };
  };
  listOption = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };

  # The NixOS options the module sets, loosely typed.
  nixosStubs = {
    options = {
      systemd.services = looseOption;
      systemd.timers = looseOption;
      services.udev.packages = listOption;
      environment.systemPackages = listOption;
      environment.etc = looseOption;
      users.users = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.home = mkOption { type = types.str; };
          }
        );
        default = { };
      };
    };
  };

  # The home-manager options the module sets.
  homeStubs = {
    options = {
      home.username = mkOption { type = types.str; };
      home.homeDirectory = mkOption { type = types.str; };
      home.packages = listOption;
      xdg.configFile = looseOption;
      systemd.user.services = looseOption;
      systemd.user.timers = looseOption;
    };
  };

  eval =
    stubs: module: config:
    lib.evalModules {
      modules = [
        stubs
        module
        config
        { _module.args.pkgs = pkgs; }
      ];
    };
  nixos = eval nixosStubs ../nixos-module.nix;
  home = eval homeStubs ../home-module.nix;

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
  manual = lib.recursiveUpdate settings { schedule.external = "manual"; };

  n1 = nixos {
    users.users.payne.home = "/home/payne";
    services.dbackup = {
      enable = true;
      user = "payne";
      inherit settings;
      environment.DDATA = "/data";
    };
  };
  n1c = n1.config;
  renderedSystem = dlib.render {
    scope = "system";
    inherit exe settings;
    configFile = configPath;
    user = "payne";
    home = "/home/payne";
    environment.DDATA = "/data";
  };
  collect = n1c.systemd.services.dbackup-collect;
  external = n1c.systemd.services.dbackup-external;
  timer = n1c.systemd.timers.dbackup-collect;
  udev = n1c.services.udev.packages;

  n2 = nixos {
    users.users.payne.home = "/home/payne";
    services.dbackup = {
      enable = true;
      user = "payne";
      settings = manual;
      environment.DDATA = "/data";
      timerConfig.OnCalendar = "*-*-* 02:30:00";
      serviceConfig.Nice = "10";
    };
  };

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
  n4 = nixos {
    users.users.payne.home = "/home/payne";
    services.dbackup = {
      enable = true;
      user = "payne";
      settings = serving;
      environment.DDATA = "/data";
    };
  };
  h4 = home {
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
    };
  };

  # The flake's outputs, with a stand-in nixpkgs: nixpkgs.lib, and stub packages that record what they are given.
  flakeNixpkgs = {
    inherit lib;
    outPath = nixpkgsLib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
      system:
      let
        drv = name: extra: {
          type = "derivation";
          inherit name;
          outPath = store name;
        } // extra;
        tools = lib.genAttrs [
          "cargo" "rustc" "clippy" "rustfmt" "just" "rsync" "exfatprogs" "exfat" "e2fsprogs" "xfsprogs"
          "btrfs-progs" "util-linux" "acl" "attr" "systemd" "nixfmt" "nixfmt-tree"
        ] (n: drv n { });
      in
      tools
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
  viaFlake = nixos {
    imports = [ flake.nixosModules.default ];
    users.users.payne.home = "/home/payne";
    services.dbackup = {
      enable = true;
      user = "payne";
      inherit settings;
      environment.DDATA = "/data";
    };
  };

  check = name: got: want: {
    inherit name got want;
    ok = got == want;
  };
  checks = [
    # NixOS: the units are nix/lib.nix's, mapped onto systemd.services options.
    (check "nixos collect ExecStart" collect.serviceConfig.ExecStart "${exe} --config ${configPath} backup")
    (check "nixos collect runs as the user" collect.serviceConfig.User "payne")
    (check "nixos collect serviceConfig is lib.render's" collect.serviceConfig
      renderedSystem.units."dbackup-collect.service".Service
    )
    (check "nixos collect unitConfig" collect.unitConfig { RequiresMountsFor = "/srv/backup"; })
    (check "nixos services are not restarted by a rebuild" [
      collect.restartIfChanged
      external.restartIfChanged
    ] [ false false ])
    (check "nixos timer" {
      inherit (timer) wantedBy;
      inherit (timer.timerConfig) OnCalendar Persistent RandomizedDelaySec;
    } {
      wantedBy = [ "timers.target" ];
      OnCalendar = "daily";
      Persistent = "true";
      RandomizedDelaySec = "1h";
    })
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
    (check "nixos config checked at build time" (lib.hasInfix "config check" n1c.environment.etc."dbackup/config.json".source.script) true)
    (check "nixos config check sees the environment" n1c.environment.etc."dbackup/config.json".source.env.DDATA "/data")
    (check "nixos settings written as JSON" n1c.environment.etc."dbackup/config.json".source.env.unchecked.value settings)
    (check "nixos package installed" (map (p: p.name) n1c.environment.systemPackages) [ "dbackup-0.1.0" ])
    (check "nixos manual: no udev rule" n2.config.services.udev.packages [ ])
    (check "nixos manual: no trigger" n2.config.systemd.services.dbackup-external.wantedBy [ ])
    (check "nixos manual: runs dbackup external" n2.config.systemd.services.dbackup-external.serviceConfig.ExecStart "${exe} --config ${configPath} external")
    (check "nixos timerConfig overrides" n2.config.systemd.timers.dbackup-collect.timerConfig.OnCalendar "*-*-* 02:30:00")
    (check "nixos serviceConfig overrides" [
      n2.config.systemd.services.dbackup-collect.serviceConfig.Nice
      n2.config.systemd.services.dbackup-external.serviceConfig.Nice
    ] [ "10" "10" ])
    (check "nixos home defaults to /home/<user>, ~ expands to it" n3.config.systemd.services.dbackup-external.wantedBy [
      "home-payne-mnt-my\\x2dT9.mount"
    ])
    (check "nixos uuid rule ignores case" (lib.hasInfix ''ENV{ID_FS_UUID}=="6[Bb][Ee]7-[Aa]7[Dd]5"'' (lib.head n3.config.services.udev.packages).text) true)
    (check "nixos disabled: nothing" {
      services = off.config.systemd.services;
      timers = off.config.systemd.timers;
      udev = off.config.services.udev.packages;
    } {
      services = { };
      timers = { };
      udev = [ ];
    })
    (check "nixos serve: off by default" (n1c.systemd.services ? dbackup-serve) false)
    (check "nixos serve: the unit when report.serve.unit" n4.config.systemd.services.dbackup-serve.serviceConfig
      (dlib.render {
        scope = "system";
        inherit exe;
        settings = serving;
        configFile = configPath;
        user = "payne";
        home = "/home/payne";
        environment.DDATA = "/data";
      }).units."dbackup-serve.service".Service)
    (check "nixos serve: started with the system" n4.config.systemd.services.dbackup-serve.wantedBy [ "multi-user.target" ])
    (check "home serve: off by default" (h1c.systemd.user.services ? dbackup-serve) false)
    (check "home serve: the unit when report.serve.unit" h4.config.systemd.user.services.dbackup-serve.Service.ExecStart
      "${exe} --config ${configPath} serve")
    (check "nixos settings must be JSON" (builtins.tryEval (builtins.deepSeq badSettings.config.services.dbackup.settings true)).success false)
    (check "nixos settings docs warn about secrets" (lib.hasInfix "Never put secrets here" n1.options.services.dbackup.settings.description && lib.hasInfix "every user" n1.options.services.dbackup.settings.description) true)

    # home-manager: user units wanted by the drive's mount unit; no udev rule, no User=.
    (check "home units are lib.render's" {
      collect = h1c.systemd.user.services.dbackup-collect;
      external = h1c.systemd.user.services.dbackup-external;
      timer = h1c.systemd.user.timers.dbackup-collect;
    } {
      collect = renderedUser.units."dbackup-collect.service";
      external = renderedUser.units."dbackup-external.service";
      timer = renderedUser.units."dbackup-collect.timer";
    })
    (check "home external wanted by the mount" h1c.systemd.user.services.dbackup-external.Install.WantedBy [ "run-media-payne-T9.mount" ])
    (check "home units have no User=" (h1c.systemd.user.services.dbackup-collect.Service ? User) false)
    (check "home config linked for commands run by hand" h1c.xdg.configFile."dbackup/config.json".source.outPath configPath)
    (check "home config check runs as the user" (lib.hasInfix "export HOME=${lib.escapeShellArg "/home/payne"} USER=${lib.escapeShellArg "payne"}" h1c.xdg.configFile."dbackup/config.json".source.script) true)
    (check "home manual: no trigger" (h2.config.systemd.user.services.dbackup-external ? Install) false)
    (check "home timerConfig overrides" h2.config.systemd.user.timers.dbackup-collect.Timer.OnCalendar "12:00")
    # The flake: its outputs, and its modules default to its own package.
    (check "flake outputs" {
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
    } {
      packages = [ "dbackup" "default" ];
      app = "${store "dbackup-0.1.0"}/bin/dbackup";
      modules = [ true true true ];
      overlay = true;
      shell = "dbackup-shell";
      formatter = "nixfmt-tree";
      checks = [ "lib" "modules" "package" "vm" ];
      lib = "media-payne-T9.mount";
    })
    (check "flake module runs the flake's package" viaFlake.config.systemd.services.dbackup-collect.serviceConfig.ExecStart
      "${store "dbackup-0.1.0"}/bin/dbackup --config ${configPath} backup"
    )
    # (checks.modules is this file: evaluating it here would never end.)
    (check "flake lib check evaluates" flake.checks.x86_64-linux.lib.script "touch $out")
    (check "vm test" {
      inherit (vmTest) name;
      imports = map builtins.isFunction (vmTest.nodes.machine { }).imports;
      user = (vmTest.nodes.machine { }).services.dbackup.user;
      plugs = lib.hasInfix "device_add usb-storage" vmTest.testScript;
    } {
      name = "dbackup";
      imports = [ true ];
      user = "payne";
      plugs = true;
    })
    (check "home settings docs warn about secrets" (lib.hasInfix "Never put secrets here" h1.options.services.dbackup.settings.description) true)
  ];
in
map (c: { inherit (c) name got want; }) (builtins.filter (c: !c.ok) checks)
