"""Local Debian 12 guests for tests and lab rehearsal.

- ``image.ensure_image()`` builds (once, cached by recipe hash) the qcow2, kernel, initrd, SSH key
  and ``rootfs.tar``; ``image.fresh_rootfs(dest)`` unpacks a writable tree for chroot tests.
- ``fleet.Fleet`` boots N copy-on-write guests with SSH on loopback ports and writes a pyinfra
  inventory and an ssh_config; guests reach the host's 127.0.0.1 services at ``10.0.2.2``.
- ``ssh.GuestSsh`` is the one SSH client that reaches them (the image's key and host keys).
- ``commands.add_lab_parser()`` adds ``gpulab lab up|status|down|box``.
- ``vagrant`` makes the image a vagrant-libvirt box and reads ``vagrant ssh-config``.
"""
