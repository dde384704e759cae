# dbackup's scheduling logic for Nix, with builtins only (no nixpkgs): the schedule as timer settings, unit names and
# systemd path escaping, quoting, and the udev rule text. The NixOS and home-manager modules build on `render`.
#
# It mirrors src/systemd/ line for line: `render` returns exactly what `dbackup systemd render --format json` prints
# for the same config, and nix/tests/ plus tests/integration/systemd.rs check that they agree.
let
  inherit (builtins)
    any attrNames concatStringsSep elem elemAt filter foldl' genList hasAttr head isList length listToAttrs match
    replaceStrings sort split stringLength substring tail throw;

  hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  chars = s: genList (i: substring i 1 s) (stringLength s);
  # Drops the empty lists and null values of an attribute set.
  compact = as: listToAttrs (map (name: { inherit name; value = as.${name}; })
    (filter (name: as.${name} != null && as.${name} != [ ]) (attrNames as)));
  indexOf = list: listToAttrs (genList (i: { name = elemAt list i; value = i; }) (length list));

  # ---- bytes as hex ------------------------------------------------------------------------------------------------

  hexDigits = "0123456789abcdef";
  hex2 = n: substring (n / 16) 1 hexDigits + substring (n - 16 * (n / 16)) 1 hexDigits;
  # Printable ASCII, from 0x20.
  ascii = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  # Single bytes of UTF-8 sequences, cut out of characters that JSON can name: 0x80-0xbf (continuation bytes),
  # 0xc2-0xdf, 0xe0-0xef and 0xf0-0xf4 (lead bytes).
  utf8 = cp: builtins.fromJSON "\"\\u${substring 0 4 (hex2 (cp / 256) + hex2 (cp - 256 * (cp / 256)))}\"";
  byteTable =
    genList (i: { name = substring i 1 ascii; value = 32 + i; }) (stringLength ascii)
    ++ genList (i: { name = substring 1 1 (utf8 (128 + i)); value = 128 + i; }) 64
    ++ genList (i: { name = substring 0 1 (utf8 ((194 + i - 192) * 64)); value = 194 + i; }) 30
    ++ genList (i: { name = substring 0 1 (utf8 ((224 + i - 224) * 4096 + 2048 * (if i == 0 then 1 else 0))); value = 224 + i; }) 16
    ++ genList (i: { name = substring 0 1 (builtins.fromJSON "\"\\u${elemAt highSurrogates i}\\udc00\""); value = 240 + i; }) 5;
  # The high surrogates of U+10000, U+40000, U+80000, U+C0000 and U+100000, whose UTF-8 lead bytes are 0xf0-0xf4.
  highSurrogates = [ "d800" "d8c0" "d9c0" "dac0" "dbc0" ];
  byteValue = listToAttrs byteTable;
  escapeByte = c:
    if hasAttr c byteValue then "\\x" + hex2 byteValue.${c}
    else throw "dbackup: cannot escape the byte ${c} (a control character?) in a unit name";

  # ---- paths -------------------------------------------------------------------------------------------------------

  # Lexical normalisation of an absolute path, as src/expand.rs does it: no `.`, `..`, `//` or trailing `/`.
  normalize = path:
    let
      parts = filter (p: p != "" && p != ".") (filter builtins.isString (split "/" path));
      step = acc: p: if p == ".." then (if acc == [ ] then [ ] else genList (i: elemAt acc i) (length acc - 1)) else acc ++ [ p ];
    in
    "/" + concatStringsSep "/" (foldl' step [ ] parts);

  # `systemd-escape --path`: components joined by `-`; bytes other than ASCII letters, digits, `:`, `_` and `.` as
  # `\xNN`, and a leading `.` too. `/` alone is `-`.
  escapePath = path:
    let
      components = filter (p: p != "" && p != ".") (filter builtins.isString (split "/" path));
      escapeComponent = first: component:
        concatStringsSep "" (genList
          (j:
            let c = substring j 1 component; in
            if match "[A-Za-z0-9:_.]" c != null && !(first && j == 0 && c == ".") then c else escapeByte c)
          (stringLength component));
    in
    if components == [ ] then "-"
    else concatStringsSep "-" (genList (i: escapeComponent (i == 0) (elemAt components i)) (length components));

  mountUnit = path: escapePath path + ".mount";

  # ---- expansion of config paths (src/expand.rs) ---------------------------------------------------------------

  varPattern = "\\$\\$|\\$\\{([A-Za-z_][A-Za-z0-9_]*)}|\\$([A-Za-z_][A-Za-z0-9_]*)";

  # The names of the variables a config string uses.
  variables = s:
    let found = filter isList (split varPattern s);
    in map (m: if elemAt m 0 != null then elemAt m 0 else elemAt m 1) (filter (m: m != [ null null ]) found);

  # Expands `~`, `$NAME`, `${NAME}` and `$$` with `env` (which holds HOME), like src/expand.rs.
  expand = env: value:
    let
      home = env.HOME;
      afterTilde =
        if value == "~" then home
        else if hasPrefix "~/" value then home + substring 1 (stringLength value) value
        else if hasPrefix "~" value then throw "dbackup: ${value} uses ~user, which is not supported; write the path out"
        else value;
      lookup = name:
        if hasAttr name env && env.${name} != "" then env.${name}
        else throw "dbackup: the config uses \$${name} (in ${builtins.toJSON value}): set it in the module's `environment` option";
      piece = p:
        if builtins.isString p then p
        else if elemAt p 0 != null then lookup (elemAt p 0)
        else if elemAt p 1 != null then lookup (elemAt p 1)
        else "$";
    in
    concatStringsSep "" (map piece (split varPattern afterTilde));

  expandPath = env: value:
    let e = expand env value; in
    if hasPrefix "/" e then normalize e
    else throw "dbackup: ${builtins.toJSON value} expands to ${builtins.toJSON e}, which is not an absolute path";

  # ---- quoting -----------------------------------------------------------------------------------------------------

  # The C1 control characters, U+0080-U+009F, which [[:cntrl:]] (ASCII) does not see; Rust's char::is_control does.
  c1Controls = genList (i: utf8 (128 + i)) 32;
  hasControl = s: match ".*[[:cntrl:]].*" s != null || replaceStrings c1Controls (map (_: "") c1Controls) s != s;
  word = exec: what: s:
    let
      body = replaceStrings
        ([ "%" "\\" "\"" ] ++ optional exec "$")
        ([ "%%" "\\\\" "\\\"" ] ++ optional exec "$$")
        s;
    in
    if hasControl s then throw "dbackup: ${what} ${builtins.toJSON s} contains a control character, which a unit file cannot hold"
    else if s != "" && match "[A-Za-z0-9/_.:,+=@-]+" s != null then body
    else "\"${body}\"";
  # One word of `ExecStart=`: `%` and `$` doubled, quoted when needed.
  execWord = word true;
  # One word of a setting that systemd splits into words (`RequiresMountsFor=`, `Environment=`).
  settingWord = word false;
  pathWord = what: p:
    if hasPrefix "/" p then settingWord what p
    else throw "dbackup: ${what} ${builtins.toJSON p} is not an absolute path";

  # Glob characters, `|` (which separates alternatives in a udev match), quotes, backslashes, control characters.
  udevUnsafe = s: match ".*[][*?|\"\\\\].*" s != null || hasControl s;
  # The value udev stores as ID_FS_LABEL for a label: surrounding spaces dropped, inner runs of them one `_`.
  udevLabel = label:
    let safe = concatStringsSep "_" (filter (w: builtins.isString w && w != "") (split " +" label)); in
    if udevUnsafe label then
      throw "dbackup: fs_label ${builtins.toJSON label} cannot be matched by a udev rule (it contains one of * ? [ ] | \" \\ or a control character); match the drive by fs_uuid instead"
    else if safe == "" then throw "dbackup: fs_label is empty, which no drive has"
    else safe;
  upper = replaceStrings (chars "abcdefghijklmnopqrstuvwxyz") (chars "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  lower = replaceStrings (chars "ABCDEFGHIJKLMNOPQRSTUVWXYZ") (chars "abcdefghijklmnopqrstuvwxyz");
  # A glob that matches ID_FS_UUID in any case (`6be7` -> `6[Bb][Ee]7`).
  udevUuid = uuid:
    if udevUnsafe uuid || match ".*[[:space:]].*" uuid != null then
      throw "dbackup: fs_uuid ${builtins.toJSON uuid} cannot be matched by a udev rule (it contains one of * ? [ ] | \" \\ or a control character); give the UUID as `blkid -s UUID -o value DEVICE` prints it"
    else if uuid == "" then throw "dbackup: fs_uuid is empty, which no drive has"
    else concatStringsSep "" (map (c: if match "[A-Za-z]" c != null then "[${upper c}${lower c}]" else c) (chars uuid));

  # ---- units -------------------------------------------------------------------------------------------------------

  names = {
    collectService = "dbackup-collect.service";
    collectTimer = "dbackup-collect.timer";
    externalService = "dbackup-external.service";
    serveService = "dbackup-serve.service";
    udevRules = "99-dbackup.rules";
  };

  header = "# Generated by dbackup from its config. Do not edit: change the config and generate it again.";

  keyOrder = [
    "Description" "Documentation" "Wants" "After" "RequiresMountsFor" "Type" "User" "Environment" "ExecStartPre" "ExecStart"
    "SuccessExitStatus" "Restart" "RestartPreventExitStatus" "RestartSec" "Nice" "CPUSchedulingPolicy"
    "IOSchedulingClass" "NoNewPrivileges" "ProtectSystem" "ReadWritePaths" "PrivateTmp" "ProtectKernelTunables"
    "ProtectKernelModules" "ProtectKernelLogs" "ProtectControlGroups" "ProtectHostname" "CapabilityBoundingSet" "LockPersonality"
    "RestrictRealtime" "SystemCallArchitectures" "OnCalendar" "Persistent" "RandomizedDelaySec" "WantedBy"
  ];
  sectionOrder = [ "Unit" "Service" "Timer" "Install" ];

  # Sorts names by their place in `order` (others last), then by name.
  orderBy = order: list:
    let
      rank = indexOf order;
      r = n: if hasAttr n rank then rank.${n} else length order;
    in
    sort (a: b: if r a != r b then r a < r b else a < b) list;

  # The text of a unit file from its sections (a value is a string, or a list for a repeated setting).
  unitText = unit:
    header + "\n" + concatStringsSep "" (map
      (section:
        "\n[${section}]\n" + concatStringsSep "" (map
          (key:
            let v = unit.${section}.${key}; in
            concatStringsSep "" (map (x: "${key}=${x}\n") (if isList v then v else [ v ])))
          (orderBy keyOrder (attrNames unit.${section}))))
      (orderBy sectionOrder (attrNames unit)));

  randomizedDelay = incremental: if incremental == "hourly" then "5min" else "1h";

  externalArgs = external: if external == "manual" then [ "external" ] else [ "backup" ];
  waitForDrive = [ "systemd" "wait-for-drive" "--timeout" "60" ];

  setBySystemd = [ "HOME" "USER" "LOGNAME" ];

  # A destination that is a drive (`kind` absent or `drive`), not a bucket.
  isDrive = d: (d.kind or "drive") == "drive";

  # What the units see of the settings, for the arguments of `render` (below): the variables the config uses and
  # the units therefore set (`environment`), the expanded backup root, and the run log's directory
  # ($XDG_STATE_HOME/dbackup with the units' environment).
  dirs =
    { user ? "root", home, environment ? { }, settings, ... }:
    let
      env = environment // { HOME = home; USER = user; LOGNAME = user; };
      configStrings =
        optional (settings ? backup_root) settings.backup_root
        ++ builtins.concatLists (map (s: (s.sources or [ ]) ++ (s.exclusions or [ ]) ++ (s.exclude_from or [ ])) (settings.backup_sets or [ ]))
        ++ map (d: d.path) (filter isDrive (settings.destinations or [ ]))
        ++ builtins.concatMap (d: optional (d ? credentials_file) d.credentials_file) (settings.destinations or [ ])
        # What else a run expands: rsync options' values, the encryption files, the page's path.
        ++ builtins.concatLists (map (s: s.rsync_args or [ ]) (settings.backup_sets or [ ]))
        ++ builtins.concatMap (e: builtins.concatMap (k: optional (e ? ${k}) e.${k}) [ "recipients_file" "identity_file" "passphrase_file" ])
          (builtins.filter builtins.isAttrs ([ (settings.encryption or null) ] ++ map (d: d.encryption or null) (settings.destinations or [ ])))
        ++ optional ((settings.report or { }) ? path) settings.report.path;
      used = builtins.concatLists (map variables configStrings)
        ++ optional (!(settings ? backup_root) && (environment.DBACKUP or "") != "") "DBACKUP";
      unitEnvironment = listToAttrs (map (name: { inherit name; value = env.${name} or (throw "dbackup: the config uses \$${name}: set it in the module's `environment` option"); })
        (filter (n: !(elem n setBySystemd)) used));
      stateHome = unitEnvironment.XDG_STATE_HOME or "";
    in
    {
      environment = unitEnvironment;
      backupRoot =
        if settings ? backup_root then expandPath env settings.backup_root
        else if (environment.DBACKUP or "") != "" then expandPath env environment.DBACKUP
        else normalize (home + "/.local/share/dbackup");
      stateDir =
        if hasPrefix "/" stateHome then normalize (stateHome + "/dbackup")
        else normalize (home + "/.local/state/dbackup");
    };

  # Everything `dbackup systemd render --format json` prints, for:
  #   scope       "system" or "user"
  #   exe         the dbackup binary the units run
  #   configFile  the config file (`--config`), or null
  #   user        the user the system units run as (`User=`)
  #   home        that user's home: `~` and $HOME in the settings expand to it
  #   environment other variables the settings use (`$DDATA`), set in the units
  #   settings    the config, as the JSON file holds it
  render =
    args@{ scope, exe, configFile ? null, user ? "root", home, environment ? { }, settings }:
    let
      system = scope == "system";
      schedule = { incremental = "daily"; full = "weekly"; external = "weekly"; } // (settings.schedule or { });
      external = schedule.external;
      triggered = external != "manual";
      triggers = triggered && mounts != [ ];
      env = environment // { HOME = home; USER = user; LOGNAME = user; };
      # The drives: a bucket (`kind` s3 or b2) has no path, no mount unit and no udev rule.
      destinations = filter isDrive (settings.destinations or [ ]);
      # A run that uploads to a bucket waits for the network (a user manager has no such target).
      online = optional (system && any (d: !isDrive d) (settings.destinations or [ ])) "network-online.target";
      # `report.serve`: the status page's server, a unit only when `unit` asks for it (off by default).
      serve = (settings.report or { }).serve or { };
      serveUnit = serve.unit or false;
      serveListen = serve.listen or "127.0.0.1:8422";

      seen = dirs args;
      unitEnvironment = seen.environment;
      root = pathWord "backup_root" seen.backupRoot;
      stateDir = seen.stateDir;

      drives = map (d: d // { path = expandPath env d.path; }) destinations;
      mounts = map (d: builtins.seq (pathWord "path" d.path) (mountUnit d.path)) drives;
      # What the system units may write: the root, the run log, the drives (`-`: absent is no error).
      # The status page's directory when the config puts it somewhere of its own (`report.path`).
      report = settings.report or { };
      reportDir =
        if report ? path && (report.write or true) then
          dirOf (builtins.seq (pathWord "report.path" (expandPath env report.path)) (expandPath env report.path))
        else
          null;
      writable = [ root (pathWord "the state directory" stateDir) ]
        ++ map (d: settingWord "path" "-${d.path}") drives
        ++ optional (reportDir != null) (settingWord "report.path" "-${reportDir}");

      # The programs the units' runs start by name (src/systemd Input::programs, notify::sinks::programs).
      notifications = settings.notifications or { };
      notifyCommand = notifications.command or [ ];
      programs = builtins.attrNames (listToAttrs (map (name: { inherit name; value = null; }) (
        [ "rsync" ]
        ++ optional (destinations != [ ]) "blkid"
        ++ optional (notifications.desktop or false) "notify-send"
        ++ optional (notifyCommand != [ ]) (head notifyCommand))));

      command = [ (execWord "the dbackup binary" exe) ]
        ++ (if configFile == null then [ ] else [ "--config" (execWord "the config path" (toString configFile)) ]);
      exec = args: concatStringsSep " " (command ++ args);
      environmentWords = map (n: settingWord "an environment variable" "${n}=${unitEnvironment.${n}}") (attrNames unitEnvironment);

      service = args: success: compact ({
        Type = "oneshot";
        ExecStart = exec args;
        SuccessExitStatus = [ success ];
        Restart = "on-failure";
        RestartPreventExitStatus = [ "1 2" ];
        RestartSec = "15min";
        Nice = "19";
        CPUSchedulingPolicy = "idle";
        IOSchedulingClass = "idle";
        NoNewPrivileges = "yes";
        LockPersonality = "yes";
        RestrictRealtime = "yes";
        SystemCallArchitectures = "native";
        Environment = environmentWords;
      } // optionalAttrs system {
        User = user;
        ProtectSystem = "strict";
        ReadWritePaths = writable;
        PrivateTmp = "yes";
        ProtectKernelTunables = "yes";
        ProtectKernelModules = "yes";
        ProtectKernelLogs = "yes";
        ProtectControlGroups = "yes";
        ProtectHostname = "yes";
      } // optionalAttrs (system && user != "root") {
        # A user other than root has no capability to keep; root keeps them all.
        CapabilityBoundingSet = "";
      });
      documentation = [ "man:dbackup(1)" ];

      description =
        if external == "always" then "dbackup: copy the latest snapshots to a backup drive whenever one appears"
        else if external == "manual" then "dbackup: copy the latest snapshots to a backup drive (schedule.external is manual: start it by hand)"
        else "dbackup: copy the latest snapshots to a backup drive when one appears and the ${external} copy is due";

      units = {
        ${names.collectService} = {
          Unit = {
            Description = "dbackup: snapshot every backup set, then copy to a present drive when due";
            Documentation = documentation;
            RequiresMountsFor = [ root ];
          } // optionalAttrs (online != [ ]) { Wants = online; After = online; };
          Service = service [ "backup" ] "3";
        };
        ${names.collectTimer} = {
          Unit = {
            Description = "dbackup: back up ${schedule.incremental} (schedule.incremental)";
            Documentation = documentation;
          };
          Timer = {
            OnCalendar = schedule.incremental;
            Persistent = "true";
            RandomizedDelaySec = randomizedDelay schedule.incremental;
          };
          Install.WantedBy = [ "timers.target" ];
        };
        ${names.externalService} = {
          Unit = {
            Description = description;
            Documentation = documentation;
            After = [ names.collectService ] ++ online ++ mounts;
            RequiresMountsFor = [ root ];
          } // optionalAttrs (online != [ ]) { Wants = online; };
          Service = service (externalArgs external) "3 5" // optionalAttrs triggers { ExecStartPre = [ (exec waitForDrive) ]; };
        } // optionalAttrs triggers { Install.WantedBy = mounts; };
      } // optionalAttrs serveUnit {
        ${names.serveService} = {
          Unit = {
            # `%` is a specifier in Description= too (an IPv6 scope: `[::1%1]:8422`).
            Description = replaceStrings [ "%" ] [ "%%" ] "dbackup: the status page at http://${serveListen}/ (read-only)";
            Documentation = documentation;
          };
          Service = compact ({
            Type = "exec";
            ExecStart = exec [ "serve" ];
            Restart = "on-failure";
            RestartSec = "5s";
            NoNewPrivileges = "yes";
            Environment = environmentWords;
          } // optionalAttrs system {
            User = user;
            ProtectSystem = "strict";
          });
          Install.WantedBy = [ (if system then "multi-user.target" else "default.target") ];
        };
      };

      ruleFor = d:
        let
          matches =
            optional (d ? fs_uuid) "ENV{ID_FS_UUID}==\"${udevUuid d.fs_uuid}\""
            ++ optional (d ? fs_label) "ENV{ID_FS_LABEL}==\"${udevLabel d.fs_label}\"";
          facts = optional (d ? fs_uuid) "uuid ${d.fs_uuid}" ++ optional (d ? fs_label) "label ${d.fs_label}";
        in
        if matches == [ ] then {
          rule = false;
          text = "# destination ${d.name}: ${d.path}: no fs_uuid or fs_label to match, so no rule (its mount unit starts the service)\n";
        } else {
          rule = true;
          text = "# destination ${d.name}: ${d.path}, ${concatStringsSep ", " facts}\n"
            + "ACTION==\"add\", SUBSYSTEM==\"block\", ${concatStringsSep ", " matches}, TAG+=\"systemd\", ENV{SYSTEMD_WANTS}+=\"${names.externalService}\"\n";
        };
      rules = map ruleFor drives;
      hasRules = system && triggered && builtins.any (r: r.rule) rules;
      udevText = header + "\n"
        + "# Starts ${names.externalService} when a backup drive appears; the service waits for the drive's mount.\n"
        + concatStringsSep "" (map (r: r.text) rules);
    in
    {
      inherit scope units programs;
      udev_rules = if hasRules then names.udevRules else null;
      files = builtins.mapAttrs (_: unitText) units // optionalAttrs hasRules { ${names.udevRules} = udevText; };
    };
in
{
  inherit normalize escapePath mountUnit variables expand expandPath execWord settingWord udevLabel udevUuid names
    header keyOrder sectionOrder unitText randomizedDelay externalArgs waitForDrive dirs render;
}
