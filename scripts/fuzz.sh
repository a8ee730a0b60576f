#!/bin/sh
# Runs every fuzz target for a bounded time (FUZZ_TIME, default 5s each),
# after its committed corpus (testdata/fuzz) has run as unit tests. A
# failing input is written to the package's testdata/fuzz, where it then
# stays as a regression test.
set -eu
cd "$(dirname "$0")/.."
FUZZ_TIME=${FUZZ_TIME:-5s}
GO=${GO:-go}
for pkg in ./l7proxy ./controller; do
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "fuzz: $pkg $target for $FUZZ_TIME"
		$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZ_TIME" "$pkg" >/tmp/nodegress-fuzz.log 2>&1 || {
			cat /tmp/nodegress-fuzz.log
			exit 1
		}
		grep -E '^fuzz: elapsed' /tmp/nodegress-fuzz.log | tail -1
	done
done
rm -f /tmp/nodegress-fuzz.log
