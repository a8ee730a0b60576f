#!/bin/sh
# Runs every fuzz target for a bounded number of executions (FUZZ_EXECS,
# default 10000 each), after its committed corpus (testdata/fuzz) has run as
# unit tests. A failing input is written to the package's testdata/fuzz,
# where it then stays as a regression test.
#
# The bound is a count, not a duration: with a duration, Go 1.26's fuzzing
# coordinator may report "context deadline exceeded" as a failure when the
# time runs out while a worker is busy (go.dev/issue/75804), which a loaded
# machine hits. FUZZ_TIMEOUT bounds each target in time all the same.
set -eu
cd "$(dirname "$0")/.."
FUZZ_EXECS=${FUZZ_EXECS:-10000}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-5m}
GO=${GO:-go}
for pkg in ./l7proxy ./controller; do
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "fuzz: $pkg $target for $FUZZ_EXECS executions"
		$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZ_EXECS}x" -timeout "$FUZZ_TIMEOUT" "$pkg" >/tmp/nodegress-fuzz.log 2>&1 || {
			cat /tmp/nodegress-fuzz.log
			exit 1
		}
		grep -E '^fuzz: elapsed' /tmp/nodegress-fuzz.log | tail -1
	done
done
rm -f /tmp/nodegress-fuzz.log
