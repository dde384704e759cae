{
  description = "dbackup: two-phase backup for one Linux workstation (rsync snapshots, verified tar archives on a removable drive)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.default;

      # A module that imports `file` and defaults services.dbackup.package to this flake's package.
      withPackage =
        file:
        { pkgs, lib, ... }:
        {
          imports = [ file ];
          services.dbackup.package = lib.mkDefault (packageFor pkgs);
        };

      # A check derivation that exists only when the evaluation tests (lists of failures) are empty.
      evalCheck =
        pkgs: name: failures:
        if failures == [ ] then
          pkgs.runCommand name { } "touch $out"
        else
          throw "${name}: ${builtins.toJSON failures}";
    in
    {
      # The scheduling logic with builtins only (schedule -> timer, unit names, udev rule): nix/lib.nix.
      lib = import ./nix/lib.nix;

      packages = forAllSystems (pkgs: {
        dbackup = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.dbackup;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${packageFor pkgs}/bin/dbackup";
          meta.description = "dbackup's command line (`nix run . -- --help`)";
        };
      });

      overlays.default = final: prev: {
        dbackup = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default = withPackage ./nix/nixos-module.nix;
      nixosModules.dbackup = self.nixosModules.default;
      homeManagerModules.default = withPackage ./nix/home-module.nix;
      homeManagerModules.dbackup = self.homeManagerModules.default;
      homeModules.default = self.homeManagerModules.default;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (packageFor pkgs) ];
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            just
            rsync
            exfatprogs
            exfat
            e2fsprogs
            xfsprogs
            btrfs-progs
            util-linux
            acl
            attr
            systemd
            nixfmt
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      checks = forAllSystems (pkgs: {
        package = packageFor pkgs;
        lib = evalCheck pkgs "dbackup-nix-lib" (import ./nix/tests/lib.nix);
        # The modules with nixpkgs' module system and NixOS's own systemd option types and unit-file code.
        modules = evalCheck pkgs "dbackup-nix-modules" (
          import ./nix/tests/modules.nix {
            nixpkgsLib = nixpkgs.outPath;
            nixpkgs = nixpkgs.outPath;
          }
        );
        # The NixOS module on a real NixOS (evaluated and built), plus a USB drive plugged in at run time.
        vm = pkgs.testers.runNixOSTest (import ./nix/tests/vm.nix { inherit self; });
      });
    };
}
