#!/usr/bin/env python3
"""Runs a command where programs of a foreign architecture run under
qemu-user, without changing the host: as root of a new user namespace
(user and group IDs 0-65535 mapped to themselves), in new mount and PID
namespaces, with a binfmt_misc instance of its own (Linux 6.7 or later
lets a user namespace mount one) that hands ARCH's ELF programs to
qemu-ARCH-static. The host's binfmt_misc, /proc and mounts are untouched.

usage: foreign-arch.py ARCH COMMAND [ARG...]     (ARCH: aarch64)

Used by build.sh for `--arch arm64` on an x86_64 machine that has no
binfmt_misc handler for aarch64. Needs root on the host (to map the IDs)
and qemu-user-static.
"""
import ctypes
import os
import shutil
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000

# binfmt_misc registrations (the same magic and mask Debian's
# qemu-user-static registers): ELF64 little-endian, machine EM_AARCH64.
HANDLERS = {
    "aarch64": (
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    ),
}


def die(message):
    sys.exit(f"images/foreign-arch.py: {message}")


def escaped(data):
    return "".join(f"\\x{b:02x}" for b in data)


def inside(arch, command):
    """In the new namespaces: our own /proc and binfmt_misc, then COMMAND."""
    magic, mask = HANDLERS[arch]
    interpreter = shutil.which(f"qemu-{arch}-static") or die(
        f"qemu-{arch}-static not found: install qemu-user-static"
    )
    os.system("mount --make-rprivate / && mount -t proc proc /proc") == 0 or die(
        "mounting /proc in the new namespaces failed"
    )
    binfmt = "/proc/sys/fs/binfmt_misc"
    if os.system(f"mount -t binfmt_misc binfmt_misc {binfmt}") != 0:
        die(
            "this kernel does not let a user namespace mount its own binfmt_misc "
            "(Linux 6.7 or later does); register qemu-user-static on the host instead"
        )
    # F: the kernel opens the interpreter now, so it works inside chroots.
    with open(f"{binfmt}/register", "w") as register:
        register.write(f":qemu-{arch}:M::{escaped(magic)}:{escaped(mask)}:{interpreter}:F")
    os.execvp(command[0], command)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in HANDLERS:
        die(f"usage: foreign-arch.py {'|'.join(HANDLERS)} COMMAND [ARG...]")
    arch, command = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    child = os.fork()
    if child == 0:
        if libc.unshare(CLONE_NEWUSER) != 0:
            die(f"unshare(CLONE_NEWUSER): {os.strerror(ctypes.get_errno())}")
        os.write(ready_w, b"1")
        os.read(mapped_r, 1)
        if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
            die(f"unshare(mount, pid): {os.strerror(ctypes.get_errno())}")
        grandchild = os.fork()  # PID 1 of the new PID namespace
        if grandchild == 0:
            inside(arch, command)
        _, status = os.waitpid(grandchild, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{child}/{name}", "w") as f:
            f.write("0 0 65536\n")
    os.write(mapped_w, b"1")
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
