#!/bin/sh
# Exit 0 when this machine can run `make kmod-test` (possibly after its apt-get step); else print
# why not and exit 1. `make test` uses it to include the VM run or to say clearly why it skips it.
[ "$(uname -s)" = Linux ] || { echo "not Linux"; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "the guest kernel is Debian's amd64 one; this machine is $(uname -m)"; exit 1; }
[ "${MLOS_SKIP_VM:-0}" = 0 ] || { echo "MLOS_SKIP_VM=$MLOS_SKIP_VM"; exit 1; }
have_all=1
command -v qemu-system-x86_64 >/dev/null 2>&1 || have_all=0
ls /boot/vmlinuz-* >/dev/null 2>&1 || have_all=0
ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1 || have_all=0
[ -x /bin/busybox ] || have_all=0
command -v cpio >/dev/null 2>&1 || have_all=0
if [ $have_all = 0 ]; then
	command -v apt-get >/dev/null 2>&1 || { echo "qemu/kernel packages missing and no apt-get to install them"; exit 1; }
	[ "$(id -u)" = 0 ] || { echo "qemu/kernel packages missing and not root to apt-get them"; exit 1; }
fi
exit 0
