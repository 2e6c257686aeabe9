#!/usr/bin/env bash
# Runs e2e tests on VMs the harness boots (e2e/harness/vm.go): builds or reuses the guest
# image of each suite in VM_IMAGES, boots 3 guests, runs the tests in VM_TESTS through the
# SSH backend, tears everything down. Tests in VM_TESTS_AFTER (optional) run next on guests
# booted afresh: a test that reboots a guest leaves it busy with its boot for minutes, which
# other tests must not inherit. Prints the time per phase (image, boot, suite) and a table of
# test results per image. Exits non-zero when any test fails or is skipped: a VM run never
# passes by skipping.
#   VM_IMAGES="bookworm trixie sid"  VM_TESTS='TestA|TestB'  VM_TESTS_AFTER='TestC' ./scripts/e2e-vm.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
images=${VM_IMAGES:-bookworm}
tests=${VM_TESTS:?VM_TESTS (a go test -run pattern) is not set}
after=${VM_TESTS_AFTER:-}
timeout=${VM_TIMEOUT:-60m}
logdir=${VM_LOGDIR:-build/e2e-vm}
mkdir -p "$logdir"

if [ "$(id -u)" != 0 ]; then
	echo "e2e-vm: run as root (it makes network namespaces, taps and runs qemu)" >&2
	exit 1
fi

# failsum (e2e/failsum) finds each failed test's own last log lines under the hosts' dumps;
# they are printed once more after the table, so that a log read at its tail says why.
go build -o build/failsum ./e2e/failsum || exit 1

status=0
summary=()
failed_logs=()
for img in $images; do
for pass in "$tests" "$after"; do
	[ -n "$pass" ] || continue
	log=$logdir/$img.log
	[ "$pass" = "$tests" ] || log=$logdir/$img-after.log
	echo "== e2e on $img guests: $pass"
	start=$(date +%s.%N)
	MESHNET_E2E_VM=$img go test -count=1 -v -timeout "$timeout" -run "$pass" ./e2e/ 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	total=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
	image=$(awk '$1=="vm-phase" && $2=="image" {print $3+0}' "$log" | head -1)
	boot=$(awk '$1=="vm-phase" && $2=="boot" {print $3+0}' "$log" | head -1)
	suite=$(awk -v t="$total" -v i="${image:-0}" -v b="${boot:-0}" 'BEGIN {print t - i - b}')
	printf '== %s phases: image %ss, boot %ss, suite %ss (build of the test binary and teardown included); total %.0fs\n' \
		"$img" "${image:-?}" "${boot:-?}" "$(printf %.0f "$suite")" "$total"
	while read -r verdict name dur; do
		summary+=("$(printf '%-10s %-32s %-5s %s' "$img" "$name" "$verdict" "$dur")")
		[ "$verdict" = PASS ] || status=1
	done < <(sed -n 's/^--- \(PASS\|FAIL\|SKIP\): \(Test[^ ]*\) (\(.*\))$/\1 \2 \3/p' "$log")
	if ! grep -q '^--- ' "$log"; then
		summary+=("$(printf '%-10s %-32s %-5s' "$img" "(no test ran)" "FAIL")")
		status=1
	fi
	if [ "$rc" != 0 ]; then
		status=1
		failed_logs+=("$log")
	fi
done
done
echo
echo "== e2e on VMs: results per image"
printf '%-10s %-32s %-5s %s\n' image test result time
printf '%s\n' "${summary[@]}"
for log in "${failed_logs[@]}"; do
	echo
	echo "== why, from $log:"
	build/failsum < "$log" | sed -n '/^===== [0-9]* failed test/,$p'
done
exit $status
