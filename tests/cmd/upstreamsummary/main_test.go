package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A ginkgo JUnit report as e2e.test writes it, cut down to one test of
// each kind.
const sampleA = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="7" disabled="3" errors="0" failures="1" time="10.5">
  <testsuite name="Kubernetes e2e suite" tests="7" skipped="3" failures="1" errors="0" time="10.5">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="passed" time="3"></testcase>
    <testcase name="[It] [sig-network] Services should be able to create a functioning NodePort service [Conformance]" classname="Kubernetes e2e suite" status="passed" time="4"></testcase>
    <testcase name="[It] [sig-network] Services should serve endpoints on same port and different protocol for internal traffic on Type LoadBalancer" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped - Only supported for providers [gce gke aws] (not skeleton)"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] LoadBalancers [Feature:LoadBalancer] should be able to create LoadBalancer Service without NodePort and change it [Slow]" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] Netpol NetworkPolicy between server and client should allow ingress access on one named port [Feature:NetworkPolicy]" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-storage] Volumes should work" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] Services should be rejected when no endpoints exist" classname="Kubernetes e2e suite" status="failed" time="2">
      <failure message="[FAILED] both fail | here" type="failed">long output</failure>
    </testcase>
  </testsuite>
</testsuites>
`

// The same tests in the second run: the NodePort test fails there.
var sampleB = strings.Replace(sampleA,
	`should be able to create a functioning NodePort service [Conformance]" classname="Kubernetes e2e suite" status="passed" time="4"></testcase>`,
	`should be able to create a functioning NodePort service [Conformance]" classname="Kubernetes e2e suite" status="failed" time="60">
      <failure message="[FAILED] service is not reachable within 2m0s timeout on endpoint nodeport-test:80 over TCP protocol" type="failed">`+strings.Repeat("x", 5000)+`</failure>
    </testcase>`, 1)

const (
	focus = `\[sig-network\].*(Services|LoadBalancer|[Ii]ngress)`
	hide  = `Netpol`
)

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSummary(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.xml", sampleA)
	b := write(t, dir, "b.xml", sampleB)
	causes := write(t, dir, "causes.tsv", "# comment\nNodePort\tNodePort from pods: not implemented\n")
	out := filepath.Join(dir, "summary.md")
	if err := run([]string{"summary", "--focus", focus, "--hide", hide, "--causes", causes, "--out", out,
		"with kube-proxy=" + a, "with nodegress=" + b}, nil); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"| with kube-proxy | 2 | 1 | 0 | 1 | 1 |",
		"| with nodegress | 1 | 2 | 0 | 1 | 1 |",
		"1 tests pass with kube-proxy and fail (or were interrupted) with nodegress.",
		"| [sig-network] Services should be able to create a functioning NodePort service [Conformance] | passed | failed | NodePort from pods: not implemented: [FAILED] service is not reachable",
		"| [sig-network] LoadBalancers [Feature:LoadBalancer] should be able to create LoadBalancer Service without NodePort and change it [Slow] | not run | not run | cloud-only: needs a cloud provider's load balancer |",
		"| skipped - Only supported for providers [gce gke aws] (not skeleton) |",
		`| failed | failed | [FAILED] both fail \| here |`,
		"## Failing only with nodegress\n\n- NodePort from pods: not implemented:\n  - [sig-network] Services should be able to create a functioning NodePort service [Conformance]\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	for _, not := range []string{"Netpol", "sig-storage", "SynchronizedBeforeSuite"} {
		if strings.Contains(md, not) {
			t.Errorf("summary lists %q:\n%s", not, md)
		}
	}
}

func TestTrim(t *testing.T) {
	dir := t.TempDir()
	b := write(t, dir, "b.xml", sampleB)
	out := filepath.Join(dir, "trimmed.xml")
	if err := run([]string{"trim", "--focus", focus, "--hide", hide, b, out}, nil); err != nil {
		t.Fatal(err)
	}
	ts, err := readFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Tests != 5 || ts.Failures != 2 || len(ts.Suites) != 1 || ts.Suites[0].Skipped != 2 {
		t.Errorf("trimmed report counts: tests %d failures %d, want 5 and 2; suites %+v", ts.Tests, ts.Failures, ts.Suites)
	}
	for _, tc := range ts.Suites[0].Cases {
		if tc.Failure != nil && len(tc.Failure.Text) > maxMessage+20 {
			t.Errorf("%s: failure output not cut: %d bytes", tc.Name, len(tc.Failure.Text))
		}
	}
	// The trimmed report summarizes as the original does.
	var full, trimmed strings.Builder
	f, err := compile(focus, "", hide)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := readFile(write(t, dir, "orig.xml", sampleB))
	if err != nil {
		t.Fatal(err)
	}
	summarize(&full, f, []runReport{{"b", orig}}, nil, "")
	summarize(&trimmed, f, []runReport{{"b", ts}}, nil, "")
	if full.String() != trimmed.String() {
		t.Errorf("summary of the trimmed report differs:\n%s\nvs\n%s", trimmed.String(), full.String())
	}
}
