"""Host side of the module tests: boot the guest (kmod/vm/run.sh) and require a clean run.

Slow (a TCG guest, ~20 s) and needs root, qemu and Debian's kernel packages, so it runs only
when MLOS_KMOD_VM=1; `make kmod-test` is the usual entry point. The guest's own checks are
tests/kmod/guest_smoke.py.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.environ.get("MLOS_KMOD_VM") != "1" or not shutil.which("qemu-system-x86_64"),
    reason="set MLOS_KMOD_VM=1 (root, qemu-system-x86, linux-image/headers-amd64) to boot the guest")


def test_guest_run_is_clean(tmp_path):
    log = tmp_path / "serial.log"
    subprocess.run(["make", "-C", str(ROOT / "kmod"), "build"], check=True, capture_output=True)
    proc = subprocess.run([str(ROOT / "kmod/vm/run.sh")], env={**os.environ, "VM_LOG": str(log)},
                          capture_output=True, text=True, timeout=240)
    tail = proc.stdout[proc.stdout.rfind("==== mlos_ml guest run"):]
    assert proc.returncode == 0, tail
    assert "RESULT: PASS" in tail
