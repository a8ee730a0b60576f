// Command upstreamsummary turns the JUnit reports of Kubernetes' own e2e
// suite (e2e.test --report-dir) from several runs into a Markdown table, one
// row per test and one column per run, and trims the reports to the tests
// that concern the project, so that they are small enough to be committed.
//
// Usage:
//
//	upstreamsummary trim --focus RE [--skip RE] [--hide RE] IN OUT
//	upstreamsummary summary --focus RE [--skip RE] [--hide RE] [--causes FILE]
//	    [--title TEXT] --out FILE LABEL=JUNIT...
//
// A test is listed when its name matches --focus and not --hide. Those the
// run filtered out (ginkgo reports them as skipped with the message
// "skipped") are listed as "not run" with the reason their name gives
// ([Slow], [Serial], a cloud load balancer...). --causes names a file of
// "REGEXP<TAB>cause" lines: a test that fails in the last run but passes in
// the first gets the cause of the first line whose REGEXP matches its name.
package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "upstreamsummary:", err)
		os.Exit(1)
	}
}

// Ginkgo's JUnit report, the parts read and written here.
type testsuites struct {
	XMLName  xml.Name    `xml:"testsuites"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Time     float64     `xml:"time,attr"`
	Suites   []testsuite `xml:"testsuite"`
}

type testsuite struct {
	Name      string     `xml:"name,attr"`
	Tests     int        `xml:"tests,attr"`
	Skipped   int        `xml:"skipped,attr"`
	Failures  int        `xml:"failures,attr"`
	Errors    int        `xml:"errors,attr"`
	Time      float64    `xml:"time,attr"`
	Timestamp string     `xml:"timestamp,attr,omitempty"`
	Cases     []testcase `xml:"testcase"`
}

type testcase struct {
	Name      string   `xml:"name,attr"`
	Classname string   `xml:"classname,attr,omitempty"`
	Status    string   `xml:"status,attr,omitempty"`
	Time      float64  `xml:"time,attr"`
	Skipped   *message `xml:"skipped"`
	Failure   *message `xml:"failure"`
	Error     *message `xml:"error"`
}

type message struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// filter selects the tests of interest.
type filter struct {
	focus, skip, hide *regexp.Regexp
}

func (f filter) flags(fs *flag.FlagSet) (focus, skip, hide *string) {
	focus = fs.String("focus", "", "regexp: tests listed (required)")
	skip = fs.String("skip", "", "regexp: tests the run skipped on purpose")
	hide = fs.String("hide", "", "regexp: tests matching focus that are not listed")
	return
}

func compile(focus, skip, hide string) (filter, error) {
	var f filter
	var err error
	if focus == "" {
		return f, errors.New("--focus is required")
	}
	if f.focus, err = regexp.Compile(focus); err != nil {
		return f, err
	}
	if skip != "" {
		if f.skip, err = regexp.Compile(skip); err != nil {
			return f, err
		}
	}
	if hide != "" {
		if f.hide, err = regexp.Compile(hide); err != nil {
			return f, err
		}
	}
	return f, nil
}

// name is a test's name without ginkgo's node prefix.
func name(tc testcase) string { return strings.TrimPrefix(tc.Name, "[It] ") }

func (f filter) listed(tc testcase) bool {
	if !strings.HasPrefix(tc.Name, "[It] ") {
		return false // suite setup and reporting nodes
	}
	n := name(tc)
	return f.focus.MatchString(n) && (f.hide == nil || !f.hide.MatchString(n))
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: upstreamsummary trim|summary ...")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	var f filter
	focus, skip, hide := f.flags(fs)
	switch args[0] {
	case "trim":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return errors.New("usage: upstreamsummary trim --focus RE IN OUT")
		}
		f, err := compile(*focus, *skip, *hide)
		if err != nil {
			return err
		}
		return trimFile(f, fs.Arg(0), fs.Arg(1))
	case "summary":
		out := fs.String("out", "", "Markdown file to write (default stdout)")
		causes := fs.String("causes", "", "file of REGEXP<TAB>cause lines")
		title := fs.String("title", "", "text put above the table")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		f, err := compile(*focus, *skip, *hide)
		if err != nil {
			return err
		}
		var runs []runReport
		for _, a := range fs.Args() {
			label, file, ok := strings.Cut(a, "=")
			if !ok {
				return fmt.Errorf("%q: want LABEL=JUNIT", a)
			}
			ts, err := readFile(file)
			if err != nil {
				return err
			}
			runs = append(runs, runReport{label: label, suites: ts})
		}
		if len(runs) == 0 {
			return errors.New("no runs given")
		}
		var cs []cause
		if *causes != "" {
			if cs, err = readCauses(*causes); err != nil {
				return err
			}
		}
		var b strings.Builder
		summarize(&b, f, runs, cs, *title)
		if *out == "" {
			_, err = io.WriteString(stdout, b.String())
			return err
		}
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func readFile(file string) (testsuites, error) {
	var ts testsuites
	data, err := os.ReadFile(file)
	if err != nil {
		return ts, err
	}
	if err := xml.Unmarshal(data, &ts); err != nil {
		return ts, fmt.Errorf("%s: %w", file, err)
	}
	return ts, nil
}

// maxMessage bounds what is kept of a failure's message and output.
const maxMessage = 2000

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n[... cut]"
}

// trim keeps the listed tests, with their messages cut short, and
// recounts.
func trim(f filter, ts testsuites) testsuites {
	out := testsuites{Time: ts.Time}
	for _, s := range ts.Suites {
		ns := testsuite{Name: s.Name, Time: s.Time, Timestamp: s.Timestamp}
		for _, tc := range s.Cases {
			if !f.listed(tc) {
				continue
			}
			for _, m := range []*message{tc.Skipped, tc.Failure, tc.Error} {
				if m != nil {
					m.Message = clip(m.Message, maxMessage)
					m.Text = clip(m.Text, maxMessage)
				}
			}
			ns.Cases = append(ns.Cases, tc)
			ns.Tests++
			switch result(tc) {
			case "skipped", "not run":
				ns.Skipped++
			case "failed":
				ns.Failures++
			}
		}
		out.Tests += ns.Tests
		out.Failures += ns.Failures
		out.Suites = append(out.Suites, ns)
	}
	return out
}

func trimFile(f filter, in, out string) error {
	ts, err := readFile(in)
	if err != nil {
		return err
	}
	data, err := xml.MarshalIndent(trim(f, ts), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append([]byte(xml.Header), append(data, '\n')...), 0o644)
}

// result is a test's outcome: passed, failed, interrupted, skipped (by the
// test itself, at run time) or not run (filtered out by focus or skip).
func result(tc testcase) string {
	switch {
	case tc.Status == "interrupted":
		// Ginkgo reports these with an <error>; they did not fail, they
		// were stopped.
		return "interrupted"
	case tc.Failure != nil || tc.Error != nil:
		return "failed"
	case tc.Skipped != nil:
		if strings.TrimSpace(tc.Skipped.Message) == "skipped" {
			return "not run"
		}
		return "skipped"
	case tc.Status == "passed" || tc.Status == "":
		return "passed"
	}
	return tc.Status
}

// notRunReasons say why a test filtered out was not run, from its name.
var notRunReasons = []struct {
	re     *regexp.Regexp
	reason string
}{
	{regexp.MustCompile(`\[Feature:LoadBalancer\]|LoadBalancers`), "cloud-only: needs a cloud provider's load balancer"},
	{regexp.MustCompile(`IPv6|DualStack`), "IPv6/dual-stack: the cluster is IPv4-only"},
	{regexp.MustCompile(`SCTP`), "SCTP: feature-gated, not in scope"},
	{regexp.MustCompile(`\[Disruptive\]`), "[Disruptive]: restarts cluster components"},
	{regexp.MustCompile(`\[Serial\]`), "[Serial]: needs the cluster alone"},
	{regexp.MustCompile(`\[Slow\]`), "[Slow]"},
	{regexp.MustCompile(`\[Feature:[^\]]*\]`), "feature-gated ([Feature:...])"},
}

func notRunReason(n string) string {
	for _, r := range notRunReasons {
		if r.re.MatchString(n) {
			return r.reason
		}
	}
	return "filtered out"
}

type runReport struct {
	label  string
	suites testsuites
}

type cause struct {
	re    *regexp.Regexp
	cause string
}

func readCauses(file string) ([]cause, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var cs []cause
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		t := sc.Text()
		if strings.TrimSpace(t) == "" || strings.HasPrefix(t, "#") {
			continue
		}
		re, c, ok := strings.Cut(t, "\t")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want REGEXP<TAB>cause", file, line)
		}
		r, err := regexp.Compile(re)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, line, err)
		}
		cs = append(cs, cause{r, strings.TrimSpace(c)})
	}
	return cs, sc.Err()
}

// firstLine is the first non-empty line of a failure message, shortened,
// with what would break a Markdown table cell escaped.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return cell(clip(l, 160))
		}
	}
	return ""
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	return s
}

func summarize(w io.Writer, f filter, runs []runReport, causes []cause, title string) {
	type row struct {
		results []string
		cases   []testcase
	}
	rows := map[string]*row{}
	for i, r := range runs {
		for _, s := range r.suites.Suites {
			for _, tc := range s.Cases {
				if !f.listed(tc) {
					continue
				}
				n := name(tc)
				rw := rows[n]
				if rw == nil {
					rw = &row{results: make([]string, len(runs)), cases: make([]testcase, len(runs))}
					rows[n] = rw
				}
				rw.results[i] = result(tc)
				rw.cases[i] = tc
			}
		}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)

	if title != "" {
		fmt.Fprintf(w, "%s\n\n", title)
	}
	// Counts first: they are what a reader looks for.
	fmt.Fprintf(w, "| run | passed | failed | interrupted | skipped at run time | not run (filtered out) |\n|---|---|---|---|---|---|\n")
	for i, r := range runs {
		c := map[string]int{}
		for _, n := range names {
			c[rows[n].results[i]]++
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d |\n", r.label, c["passed"], c["failed"], c["interrupted"], c["skipped"], c["not run"])
	}
	last := len(runs) - 1
	var regressions []string
	for _, n := range names {
		rs := rows[n].results
		if failing(rs[last]) && rs[0] == "passed" {
			regressions = append(regressions, n)
		}
	}
	if last > 0 {
		fmt.Fprintf(w, "\n%d tests pass %s and fail (or were interrupted) %s.\n", len(regressions), runs[0].label, runs[last].label)
	}

	fmt.Fprintf(w, "\n| test |")
	for _, r := range runs {
		fmt.Fprintf(w, " %s |", r.label)
	}
	fmt.Fprintf(w, " note |\n|---|")
	for range runs {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintf(w, "---|\n")
	for _, n := range names {
		rw := rows[n]
		fmt.Fprintf(w, "| %s |", cell(n))
		allNotRun := true
		for _, res := range rw.results {
			if res == "" {
				res = "-"
			}
			if res != "not run" {
				allNotRun = false
			}
			fmt.Fprintf(w, " %s |", res)
		}
		fmt.Fprintf(w, " %s |\n", note(n, rw.results, rw.cases, last, allNotRun, causes))
	}
	if len(regressions) > 0 {
		fmt.Fprintf(w, "\n## Failing only %s\n\n", runs[last].label)
		byCause := map[string][]string{}
		var order []string
		for _, n := range regressions {
			c := causeOf(n, causes)
			if _, ok := byCause[c]; !ok {
				order = append(order, c)
			}
			byCause[c] = append(byCause[c], n)
		}
		for _, c := range order {
			fmt.Fprintf(w, "- %s:\n", c)
			for _, n := range byCause[c] {
				fmt.Fprintf(w, "  - %s\n", n)
			}
		}
	}
}

// failing reports whether a result counts as a failure: interrupted
// tests were stopped while waiting for something that had not happened.
func failing(result string) bool { return result == "failed" || result == "interrupted" }

func causeOf(n string, causes []cause) string {
	for _, c := range causes {
		if c.re.MatchString(n) {
			return c.cause
		}
	}
	return "cause not yet analysed"
}

func note(n string, results []string, cases []testcase, last int, allNotRun bool, causes []cause) string {
	if allNotRun {
		return cell(notRunReason(n))
	}
	if failing(results[last]) && results[0] == "passed" {
		msg := firstLine(failureText(cases[last]))
		if results[last] == "interrupted" {
			msg = "interrupted: still waiting when the run's time was up"
		}
		if c := causeOf(n, causes); c != "cause not yet analysed" {
			return cell(c) + ": " + msg
		}
		return msg
	}
	if results[last] == "not run" {
		return "not reached: the run's time was up before it started"
	}
	for i, r := range results {
		if r == "failed" {
			return firstLine(failureText(cases[i]))
		}
		if r == "skipped" {
			return firstLine(cases[i].Skipped.Message)
		}
	}
	return ""
}

func failureText(tc testcase) string {
	if tc.Failure != nil {
		if tc.Failure.Message != "" {
			return tc.Failure.Message
		}
		return tc.Failure.Text
	}
	if tc.Error != nil {
		if tc.Error.Message != "" {
			return tc.Error.Message
		}
		return tc.Error.Text
	}
	return ""
}
