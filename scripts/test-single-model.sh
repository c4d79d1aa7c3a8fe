#!/usr/bin/env bash
# One model of a suite through install, register, inference small and inference large, like the
# seeds' test-single-model.sh:
#   scripts/test-single-model.sh bert                      # offline suite, userspace mode
#   scripts/test-single-model.sh resnet --mode both --suite offline --repetitions 5
# Results go to validation-results/single/<model>/ (override with --out DIR). Exit code 0 = passed.
set -euo pipefail

usage() { echo "usage: $0 MODEL [--suite offline|seed|DIR] [--mode kernel|userspace|both] [--out DIR] [--repetitions N]" >&2; }
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then usage; exit 2; fi
model="$1"; shift

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3

suite=offline mode=userspace out="validation-results/single/$model" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --repetitions) extra+=(--repetitions "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage; exit 2 ;;
  esac
done

cd "$root"
exec "$py" -m validation run --suite "$suite" --model "$model" --mode "$mode" --out "$out" "${extra[@]}"
