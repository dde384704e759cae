# The dbackup package: built from Cargo.lock, with the seed's command names as links (backup, backup-collect,
# backup-external, backup-restore), shell completions, and man pages. The NixOS and home-manager modules run it.
{
  lib,
  stdenv,
  rustPlatform,
  makeWrapper,
  installShellFiles,
  rsync,
  util-linux,
  libnotify,
}:

let
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  # Only what the build reads: no target/, no .git, no result links.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../README.md
      ../src
      ../config
      ../tests
      ../xtask
    ];
  };
in
rustPlatform.buildRustPackage {
  pname = "dbackup";
  version = cargoToml.package.version;

  inherit src;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "--package"
    "dbackup"
  ];

  nativeBuildInputs = [
    makeWrapper
    installShellFiles
  ];
  # The tests run in `cargo xtask test` (CI): many need rsync, GNU tar, loop devices and root, which the build
  # sandbox does not give.
  doCheck = false;

  postInstall =
    ''
      for name in backup backup-collect backup-external backup-restore; do
        ln -s dbackup $out/bin/$name
      done
    ''
    + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
      installShellCompletion --cmd dbackup \
        --bash <($out/bin/dbackup generate completions bash) \
        --fish <($out/bin/dbackup generate completions fish) \
        --zsh <($out/bin/dbackup generate completions zsh)
      $out/bin/dbackup generate man man
      installManPage man/*.1
    ''
    + ''
      # What dbackup starts by name (`dbackup systemd render --format json` lists it as `programs`): rsync copies,
      # blkid (util-linux) tells drives apart, notify-send (libnotify) shows desktop notifications. https
      # notifications need nothing: dbackup speaks TLS itself. The wrapper keeps argv[0], so the links still dispatch.
      wrapProgram $out/bin/dbackup --prefix PATH : ${
        lib.makeBinPath [
          rsync
          util-linux
          libnotify
        ]
      }
    '';

  meta = {
    description = cargoToml.package.description;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "dbackup";
    platforms = lib.platforms.linux;
  };
}
