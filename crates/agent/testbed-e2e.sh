#!/usr/bin/env bash
# Runs the guest agent's end-to-end tests (crates/agent/tests/vm.rs) inside the nested
# testbed, where /dev/kvm is hardware (nested SVM) KVM: builds the static agent (the VM's
# /init) and the test binary on the host, then runs the ignored tests through testbed/run.
# Extra arguments go to the test binary (e.g. a test name filter).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$root/target/static" \
  cargo build --release -p vessel-agent --target x86_64-unknown-linux-gnu
bin=$(cargo test -p vessel-agent --test vm --no-run --message-format=json 2>/dev/null |
  grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$bin" ] || { echo "testbed-e2e: could not build the vm test binary" >&2; exit 1; }
exec "$root/testbed/run" --share "$root" ${VESSEL_E2E_CONSOLE:+--env VESSEL_E2E_CONSOLE=1} --timeout "${TESTBED_TIMEOUT:-900}" \
  --cmd-timeout "${TESTBED_CMD_TIMEOUT:-600}" -- \
  "$bin" --ignored --test-threads=1 --nocapture "$@"
