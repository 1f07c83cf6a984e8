#!/usr/bin/env bash
# Runs vessel-vmm's end-to-end boot tests (crates/vmm/tests/boot.rs) inside the nested
# testbed, where /dev/kvm is hardware (nested SVM) KVM. Extra arguments go to the test
# binary (e.g. a test name filter, --nocapture).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=$(cargo test -p vessel-vmm --test boot --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$bin" ] || { echo "testbed-e2e: could not build the boot test binary" >&2; exit 1; }
exec "$root/testbed/run" --share "$root" ${VESSEL_E2E_CONSOLE:+--env VESSEL_E2E_CONSOLE=1} --timeout "${TESTBED_TIMEOUT:-900}" -- \
  "$bin" --ignored --test-threads=1 --nocapture "$@"
