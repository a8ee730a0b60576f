#!/bin/sh
# Builds h2spec, the HTTP/2 conformance tester, from its Go module into
# bin/h2spec (once; a few seconds after the first time). l7proxy's
# TestH2Spec runs it against the proxy's HTTP/2 server.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
H2SPEC_VERSION=v2.2.1+incompatible
if [ -x bin/h2spec ] && $GO version -m bin/h2spec 2>/dev/null | grep -q "h2spec[[:space:]]*$H2SPEC_VERSION"; then
	exit 0
fi
mkdir -p bin
GOBIN=$PWD/bin $GO install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION"
