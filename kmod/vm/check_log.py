#!/usr/bin/env python3
"""Judge a guest's serial log: marker lines of the smoke script, the pytest run, kernel splats.

Exit 0 only when the smoke script reported no failure and its summary, the optional pytest run
exited 0, the module unloaded, the guest dumped its kernel log, and no kernel line in the log
(the dmesg dump or console printk lines) shows a BUG, Oops, WARNING or lockdep report.

``--extract DIR`` also writes the files the guest handed back (base64 between MLOS-FILE-BEGIN
<name> and MLOS-FILE-END: the guest's disk is gone when it powers off) into DIR.
"""
import base64
import os
import re
import sys

SPLAT = re.compile(r"BUG:|Oops|WARNING:|kernel BUG|general protection fault|Call Trace:|"
                   r"possible circular locking|lockdep|INFO: task .* blocked|list_(add|del) corruption|"
                   r"refcount_t:|UBSAN|Kernel panic|[Uu]nable to handle|Bad page|[Ss]lab.*corrupt")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc")
KLINE = re.compile(r"^\[\s*\d+\.\d+\]")
PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error|skipped|deselected|xfailed|xpassed)"
                            r".*in [\d.]+s.*?)\s*=*$")


def main(argv):
    path, want_pytest = argv[0], "--pytest" in argv
    extract = argv[argv.index("--extract") + 1] if "--extract" in argv else None
    files, current = {}, None
    lines = open(path, errors="replace").read().splitlines()
    problems, results, summary, pytest_line, exits = [], [], None, None, {}
    in_dmesg = dumped = False
    for line in lines:
        line = ANSI.sub("", line)
        if line.startswith("MLOS-FILE-BEGIN "):
            current = os.path.basename(line.split(" ", 1)[1].strip())
            files[current] = []
            continue
        if line == "MLOS-FILE-END":
            current = None
            continue
        if current is not None:
            if not KLINE.match(line):               # a printk line may land inside the dump
                files[current].append(line.strip())
            continue
        if line == "MLOS-DMESG-BEGIN":
            in_dmesg = True
            continue
        if line == "MLOS-DMESG-END":
            in_dmesg, dumped = False, True
            continue
        if (in_dmesg or KLINE.match(line)) and SPLAT.search(line):
            problems.append(f"kernel: {line}")
            continue
        if line.startswith("MLOS-TEST SUMMARY"):
            summary = line
        elif line.startswith("MLOS-TEST "):
            results.append(line)
        elif m := re.search(r"MLOS-VM (\w+) exit=(\d+)", line):
            exits[m.group(1)] = int(m.group(2))
        elif m := PYTEST_SUMMARY.match(line.strip()):
            pytest_line = m.group(1)
    fails = [r for r in results if r.startswith("MLOS-TEST FAIL")]
    problems += fails
    if summary is None:
        problems.append("no MLOS-TEST SUMMARY line: the smoke script did not finish")
    for step in ("insmod", "smoke", "rmmod") + (("pytest",) if want_pytest else ()):
        if exits.get(step) != 0:
            problems.append(f"guest step {step}: exit={exits.get(step, 'missing')}")
    if not dumped:
        problems.append("no kernel log dump: the guest crashed or timed out")

    print("\n==== mlos_ml guest run ====")
    passed = [r for r in results if r.startswith("MLOS-TEST PASS")]
    print(f"smoke: {len(passed)} passed, {len(fails)} failed" + (f"  ({summary})" if summary else ""))
    if want_pytest:
        print(f"guest pytest: {pytest_line or 'no summary line'}")
    for p in problems:
        print(f"PROBLEM: {p}")
    if extract:
        os.makedirs(extract, exist_ok=True)
        for name, chunks in files.items():
            with open(os.path.join(extract, name), "wb") as f:
                f.write(base64.b64decode("".join(chunks)))
            print(f"guest file: {os.path.join(extract, name)}")
    print("RESULT:", "FAIL" if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
