# Tests of nix/lib.nix with builtins only (no nixpkgs): evaluates to the list of failed cases, `[ ]` when all pass.
#
#   nix-instantiate --eval --strict --json nix/tests/lib.nix
#
# tests/integration/systemd.rs checks the rest: that `render` equals `dbackup systemd render --format json`, and that
# `mountUnit` agrees with `systemd-escape --path --suffix=mount`.
let
  lib = import ../lib.nix;
  fails = expr: !(builtins.tryEval (builtins.deepSeq expr expr)).success;
  case = name: got: want: { inherit name got want; };

  env = {
    HOME = "/home/u";
    D = "/d";
  };
  settings = {
    backup_root = "/srv/b";
    backup_sets = [
      {
        name = "a";
        sources = [ "~/a" ];
      }
    ];
    destinations = [
      {
        name = "T9";
        path = "/media/u/T9";
        fs_label = "T9";
      }
    ];
  };
  render =
    scope: extra:
    lib.render {
      inherit scope;
      exe = "/bin/dbackup";
      user = "u";
      home = "/home/u";
      settings = settings // extra;
    };
  system = render "system" { };
  manual = render "system" { schedule.external = "manual"; };
  user = render "user" { schedule.external = "always"; };
  noDrive = render "system" { destinations = [ ]; };

  cases = [
    (case "normalize" (map lib.normalize [ "/a//b/./c/../d/" "/.." "/" "/x/../../y" ]) [
      "/a/b/d"
      "/"
      "/"
      "/y"
    ])
    (case "escapePath"
      (map lib.escapePath [
        "/media/payne/T9"
        "/media/payne/my-drive"
        "/run/media/x y/T9"
        "/"
        "/.hidden/x"
        "/a/.b"
        "/é/ü"
        "/a_b:c.d/e+f@g"
        "/%x/$y"
      ])
      [
        "media-payne-T9"
        "media-payne-my\\x2ddrive"
        "run-media-x\\x20y-T9"
        "-"
        "\\x2ehidden-x"
        "a-.b"
        "\\xc3\\xa9-\\xc3\\xbc"
        "a_b:c.d-e\\x2bf\\x40g"
        "\\x25x-\\x24y"
      ]
    )
    (case "mountUnit" (lib.mountUnit "/run/media/payne/T9") "run-media-payne-T9.mount")
    (case "variables" (map lib.variables [ "$DDATA/x" "\${A}/$B_2/$$C/$/\${9x}/$" "~/plain" ]) [
      [ "DDATA" ]
      [
        "A"
        "B_2"
      ]
      [ ]
    ])
    (case "expand" (map (lib.expand env) [ "~" "~/x" "$D/y" "\${D}z" "$$D" "a$" "$HOME/.c" ]) [
      "/home/u"
      "/home/u/x"
      "/d/y"
      "/dz"
      "$D"
      "a$"
      "/home/u/.c"
    ])
    (case "expand refuses ~user and undefined variables" (map (v: fails (lib.expand env v)) [
      "~bob/x"
      "$NOPE/x"
      "~/ok"
    ]) [ true true false ])
    (case "expandPath normalises and wants an absolute path" [
      (lib.expandPath env "$D/./a/../b/")
      (fails (lib.expandPath env "rel/x"))
    ] [ "/d/b" true ])
    (case "execWord" (map (lib.execWord "x") [ "/nix/store/a-dbackup/bin/dbackup" "/a b/c.json" "/50%/$HOME" "" ]) [
      "/nix/store/a-dbackup/bin/dbackup"
      "\"/a b/c.json\""
      "\"/50%%/$$HOME\""
      "\"\""
    ])
    (case "settingWord" (map (lib.settingWord "x") [ "/50%/$HOME" "A=\"q\" \\" ]) [
      "\"/50%%/$HOME\""
      "\"A=\\\"q\\\" \\\\\""
    ])
    (case "words refuse control characters" (fails (lib.execWord "x" "a\nb")) true)
    (case "udevLabel" (map lib.udevLabel [ "T9" "My Backup" "  a   b  " "Données" ]) [
      "T9"
      "My_Backup"
      "a_b"
      "Données"
    ])
    # `|` separates alternatives in a udev match: "T9|OTHER" would match a drive labelled OTHER.
    (case "udevLabel refuses globs, alternatives, quotes and blanks" (map (l: fails (lib.udevLabel l)) [ "T*" "T9|OTHER" "a\"b" "a\\b" "   " ]) [
      true
      true
      true
      true
      true
    ])
    (case "udevUuid" (map lib.udevUuid [ "6be7-A7D5" "1234" ]) [ "6[Bb][Ee]7-[Aa]7[Dd]5" "1234" ])
    (case "udevUuid refuses blanks and alternatives" (map (u: fails (lib.udevUuid u)) [ "12 34" "" "1234|" ]) [ true true true ])
    (case "unitText orders sections and settings"
      (lib.unitText {
        Install.WantedBy = [ "a" "b" ];
        Service = {
          Zeta = "1";
          ExecStart = "x";
          Type = "oneshot";
        };
        Unit.Description = "d";
      })
      "${lib.header}\n\n[Unit]\nDescription=d\n\n[Service]\nType=oneshot\nExecStart=x\nZeta=1\n\n[Install]\nWantedBy=a\nWantedBy=b\n"
    )
    (case "randomizedDelay" (map lib.randomizedDelay [ "hourly" "daily" "weekly" "monthly" ]) [ "5min" "1h" "1h" "1h" ])
    (case "externalArgs" (map lib.externalArgs [ "daily" "always" "manual" ]) [
      [ "backup" ]
      [ "backup" ]
      [ "external" ]
    ])
    (case "render: the files are the units' text" (builtins.attrNames system.files) [
      "99-dbackup.rules"
      "dbackup-collect.service"
      "dbackup-collect.timer"
      "dbackup-external.service"
    ])
    (case "render: schedule defaults" system.units."dbackup-collect.timer".Timer.OnCalendar "daily")
    (case "render: the external unit waits for the drive, then runs backup" {
      inherit (system.units."dbackup-external.service".Service) ExecStartPre ExecStart;
    } {
      ExecStartPre = [ "/bin/dbackup systemd wait-for-drive --timeout 60" ];
      ExecStart = "/bin/dbackup backup";
    })
    (case "render: manual has no trigger" {
      install = manual.units."dbackup-external.service" ? Install;
      pre = manual.units."dbackup-external.service".Service ? ExecStartPre;
      udev = manual.udev_rules;
    } {
      install = false;
      pre = false;
      udev = null;
    })
    (case "render: user scope has no udev rule and no User=" {
      udev = user.udev_rules;
      userSetting = user.units."dbackup-collect.service".Service ? User;
      wantedBy = user.units."dbackup-external.service".Install.WantedBy;
    } {
      udev = null;
      userSetting = false;
      wantedBy = [ "media-u-T9.mount" ];
    })
    (case "render: no destination, no trigger" {
      install = noDrive.units."dbackup-external.service" ? Install;
      after = noDrive.units."dbackup-external.service".Unit.After;
    } {
      install = false;
      after = [ "dbackup-collect.service" ];
    })
    (case "render: the system units are sandboxed, writing only the root, the run log and the drives" {
      inherit (system.units."dbackup-collect.service".Service)
        ProtectSystem ReadWritePaths PrivateTmp ProtectKernelTunables ProtectKernelModules ProtectKernelLogs
        ProtectControlGroups ProtectHostname CapabilityBoundingSet LockPersonality RestrictRealtime
        SystemCallArchitectures NoNewPrivileges;
    } {
      ProtectSystem = "strict";
      ReadWritePaths = [ "/srv/b" "/home/u/.local/state/dbackup" "-/media/u/T9" ];
      PrivateTmp = "yes";
      ProtectKernelTunables = "yes";
      ProtectKernelModules = "yes";
      ProtectKernelLogs = "yes";
      ProtectControlGroups = "yes";
      ProtectHostname = "yes";
      CapabilityBoundingSet = "";
      LockPersonality = "yes";
      RestrictRealtime = "yes";
      SystemCallArchitectures = "native";
      NoNewPrivileges = "yes";
    })
    (case "render: root keeps its capabilities"
      ((lib.render { scope = "system"; exe = "/bin/dbackup"; user = "root"; home = "/root"; inherit settings; })
        .units."dbackup-collect.service".Service ? CapabilityBoundingSet)
      false)
    (case "render: the user units have the seccomp settings, no namespace" (builtins.attrNames
      (builtins.removeAttrs user.units."dbackup-collect.service".Service [ "Type" "ExecStart" "SuccessExitStatus" "Restart" "RestartPreventExitStatus" "RestartSec" "Nice" "CPUSchedulingPolicy" "IOSchedulingClass" ]))
      [ "LockPersonality" "NoNewPrivileges" "RestrictRealtime" "SystemCallArchitectures" ])
    (case "render: the programs the units start" [
      system.programs
      noDrive.programs
      (render "user" { notifications = { desktop = true; command = [ "/bin/notify-me" "x" ]; http = "https://ntfy.sh/x"; }; }).programs
    ] [
      [ "blkid" "rsync" ]
      [ "rsync" ]
      [ "/bin/notify-me" "blkid" "notify-send" "rsync" ]
    ])
    (case "dirs: the root, the run log's directory, the variables the units set" [
      (lib.dirs { home = "/home/u"; inherit settings; })
      (lib.dirs { home = "/home/u/"; environment = { DBACKUP = "~/bk"; XDG_STATE_HOME = "/st"; }; settings = { backup_sets = [ { name = "a"; sources = [ "$XDG_STATE_HOME/x" ]; } ]; }; })
    ] [
      { backupRoot = "/srv/b"; stateDir = "/home/u/.local/state/dbackup"; environment = { }; }
      { backupRoot = "/home/u/bk"; stateDir = "/st/dbackup"; environment = { DBACKUP = "~/bk"; XDG_STATE_HOME = "/st"; }; }
    ])
    (case "render: a variable the settings use must be given" (fails (render "user" {
      backup_sets = [
        {
          name = "a";
          sources = [ "$DDATA" ];
        }
      ];
    })) true)
  ];
in
map (c: { inherit (c) name got want; }) (builtins.filter (c: c.got != c.want) cases)
