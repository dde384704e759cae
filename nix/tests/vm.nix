# NixOS VM test, to nixpkgs conventions (pkgs.testers.runNixOSTest; the flake's `checks.<system>.vm`): a machine with
# services.dbackup backs up a user's files, then a USB disk image labelled T9 (exFAT, as the Samsung T9 ships) is
# plugged in while it runs. udev starts dbackup-external.service, which waits for the drive's mount; once the drive is
# mounted, the external backup appears on it and `sha256sum -c` accepts its checksums.
#
# It needs KVM and nixpkgs, so it cannot run on the offline development machine: see nix/tests/README.md.
{ self }:
{ pkgs, lib, ... }:

let
  t9 = pkgs.runCommand "t9.img" { nativeBuildInputs = [ pkgs.exfatprogs ]; } ''
    truncate -s 256M $out
    mkfs.exfat -L T9 $out
  '';
in
{
  name = "dbackup";

  nodes.machine =
    { ... }:
    {
      imports = [ self.nixosModules.default ];

      users.users.payne = {
        isNormalUser = true;
        uid = 1000;
      };
      boot.supportedFilesystems = [ "exfat" ];
      # A USB controller to plug the drive into at run time.
      virtualisation.qemu.options = [ "-device qemu-xhci,id=xhci" ];

      services.dbackup = {
        enable = true;
        user = "payne";
        settings = {
          backup_root = "/home/payne/backups";
          backup_sets = [
            {
              name = "data";
              sources = [ "~/data" ];
            }
          ];
          schedule = {
            incremental = "daily";
            external = "weekly";
          };
          destinations = [
            {
              name = "T9";
              path = "/media/T9";
              fs_label = "T9";
            }
          ];
        };
      };
    };

  testScript = ''
    import os
    import shutil

    machine.wait_for_unit("multi-user.target")
    machine.succeed("systemctl is-enabled dbackup-collect.timer")
    # Sandboxed: the backup root and the run log's directory exist (tmpfiles), the rest of the system is read-only.
    machine.succeed("systemctl show -P ProtectSystem dbackup-collect.service | grep -qx strict")
    machine.succeed("test -d /home/payne/.local/state/dbackup && test -d /home/payne/backups")
    machine.succeed("grep -q 'ENV{SYSTEMD_WANTS}+=\"dbackup-external.service\"' /etc/udev/rules.d/99-dbackup.rules")

    with subtest("the timer's service collects a snapshot"):
        machine.succeed("su payne -c 'mkdir -p ~/data && echo hello > ~/data/a.txt && mkdir -p ~/backups'")
        machine.succeed("systemctl start dbackup-collect.service")
        machine.succeed("test -n \"$(ls /home/payne/backups)\"")

    with subtest("plugging the drive in starts dbackup-external.service, which waits for the mount"):
        image = os.path.join(os.environ.get("TMPDIR", "/tmp"), "t9.img")
        shutil.copyfile("${t9}", image)
        os.chmod(image, 0o644)
        machine.send_monitor_command(f"drive_add 0 if=none,id=t9,format=raw,file={image}")
        machine.send_monitor_command("device_add usb-storage,bus=xhci.0,drive=t9,id=t9stick")
        machine.wait_until_succeeds("test -e /dev/disk/by-label/T9")
        machine.wait_until_succeeds("systemctl show -P ActiveState dbackup-external.service | grep -qx activating")

    with subtest("once mounted, the external backup is written and verifies"):
        machine.succeed("mkdir -p /media/T9 && mount -o uid=1000,gid=100 /dev/disk/by-label/T9 /media/T9")
        machine.wait_until_succeeds("systemctl show -P ActiveState dbackup-external.service | grep -qx inactive", timeout=300)
        machine.succeed("systemctl show -P Result dbackup-external.service | grep -qx success")
        machine.succeed("cd /media/T9/backups/*/ && sha256sum -c verification.sha256")
        machine.succeed("test -f /media/T9/backups/*/data.tar")

    with subtest("the drive's mount starting the unit again copies nothing new: weekly is not due"):
        before = machine.succeed("ls /media/T9/backups | wc -l")
        run = machine.succeed("systemctl show -P InvocationID dbackup-external.service").strip()
        machine.succeed("umount /media/T9 && mount -o uid=1000,gid=100 /dev/disk/by-label/T9 /media/T9")
        machine.wait_until_succeeds(f"test \"$(systemctl show -P InvocationID dbackup-external.service)\" != {run}")
        machine.wait_until_succeeds("systemctl show -P ActiveState dbackup-external.service | grep -qx inactive", timeout=300)
        machine.succeed("systemctl show -P Result dbackup-external.service | grep -qx success")
        assert machine.succeed("ls /media/T9/backups | wc -l") == before
  '';
}
