# The dbackup package, built from Cargo.lock. The NixOS and home-manager modules (issue 6) build on it.
{ lib, rustPlatform, makeWrapper, rsync, gnutar }:

let
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "dbackup";
  version = cargoToml.package.version;

  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--package" "dbackup" ];

  nativeBuildInputs = [ makeWrapper ];
  nativeCheckInputs = [ rsync gnutar ];
  # The integration tests need rsync, loop devices and root; the sandbox gives none of those reliably.
  doCheck = false;

  postInstall = ''
    for name in backup backup-collect backup-external backup-restore; do
      ln -s dbackup $out/bin/$name
    done
    wrapProgram $out/bin/dbackup --prefix PATH : ${lib.makeBinPath [ rsync ]}
  '';

  meta = {
    description = cargoToml.package.description;
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "dbackup";
    platforms = lib.platforms.linux;
  };
}
