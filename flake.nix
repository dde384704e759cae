{
  description = "dbackup: two-phase backup for one Linux workstation (rsync snapshots, verified tar archives on a removable drive)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        dbackup = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.dbackup;
      });

      overlays.default = final: prev: {
        dbackup = final.callPackage ./nix/package.nix { };
      };
    };
}
