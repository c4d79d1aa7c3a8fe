#!/bin/sh
# Boot Debian's kernel under qemu (TCG) with mlos_ml.ko and kmod/vm/init in an initramfs, the
# host's / shared read-only; then check the serial log (kmod/vm/check_log.py).
# Environment: KVER, REPO (the checkout, also its path inside the guest), PYTEST_ARGS,
# MODULE_PARAMS, VM_TIMEOUT (seconds, default 170), VM_LOG (where to keep the serial log),
# OUT_DIR (where to write the files the guest leaves in its /tmp/mlos-out).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}
KVER=${KVER:-$(ls /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)}
VM_TIMEOUT=${VM_TIMEOUT:-170}
WORK=$(mktemp -d /tmp/mlos-vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
VM_LOG=${VM_LOG:-$REPO/kmod/vm/last-run.log}

ROOT=$WORK/root
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/etc" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/host" \
	"$ROOT/lib/modules"
cp /bin/busybox "$ROOT/bin/busybox"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
         netfs fscache 9pnet 9pnet_virtio 9p; do
	f=$(find "/lib/modules/$KVER/kernel" -name "$m.ko" | head -1)
	[ -n "$f" ] || { echo "run.sh: $m.ko not found for $KVER"; exit 1; }
	cp "$f" "$ROOT/lib/modules/"
done
cp "$REPO/kmod/mlos_ml.ko" "$ROOT/lib/modules/"
cp "$HERE/init" "$ROOT/init"
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }   # shell-quote
{
	echo "REPO=$(shq "$REPO")"
	echo "PYTEST_ARGS=$(shq "${PYTEST_ARGS:-}")"
	echo "MODULE_PARAMS=$(shq "${MODULE_PARAMS:-}")"
	echo "BENCH_ENV=$(shq "$(env | grep '^MLOS_BENCH_[A-Z_]*=[A-Za-z0-9._-]*$' | tr '\n' ' ')")"
} > "$ROOT/etc/mlos-test.env"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initramfs.gz"

echo "run.sh: booting $KVER under TCG (timeout ${VM_TIMEOUT}s), serial log in $VM_LOG"
set +e
timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 3072 -smp 2 -nographic -no-reboot \
	-kernel "/boot/vmlinuz-$KVER" -initrd "$WORK/initramfs.gz" \
	-append "console=ttyS0 panic=-1 quiet slub_debug=FZP" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	< /dev/null 2>&1 | tr -d '\r' | tee "$VM_LOG"
set -e
python3 "$HERE/check_log.py" "$VM_LOG" ${PYTEST_ARGS:+--pytest} ${OUT_DIR:+--extract "$OUT_DIR"}
