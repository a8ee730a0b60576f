package l7proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"
)

// TestReplayBody follows a body copy through the reads of a first
// attempt: kept whole (at the declared length, or at the end of a body of
// unknown length), or dropped (too long, broken), and what a retry then
// sends.
func TestReplayBody(t *testing.T) {
	p, err := New(Options{RetryBodyBytes: 8})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		hasBody bool
		length  int64
		pieces  []string
		end     string // "eof", "fail" or "" (none seen)
		kept    bool   // a copy is made at all
		whole   bool
		sent    string
	}{
		{"no body", false, 0, nil, "", false, false, ""},
		{"declared over the bound", true, 9, nil, "", false, false, ""},
		{"declared, read whole", true, 7, []string{"abc", "defg"}, "", true, true, "abcdefg"},
		{"declared, read in part", true, 7, []string{"abc"}, "", true, false, ""},
		{"unknown length at the bound", true, -1, []string{"abcd", "efgh"}, "eof", true, true, "abcdefgh"},
		{"unknown length before its end", true, -1, []string{"abcd", "efgh"}, "", true, false, ""},
		{"unknown length over the bound", true, -1, []string{"abcd", "efgh", "i"}, "eof", true, false, ""},
		{"broken", true, -1, []string{"abc"}, "fail", true, false, ""},
		{"broken after its last byte", true, 3, []string{"abc"}, "fail", true, true, "abc"},
		{"empty, of unknown length", true, -1, nil, "eof", true, true, ""},
	} {
		r := p.newReplayBody(tt.hasBody, tt.length)
		if (r != nil) != tt.kept {
			t.Errorf("%s: copy made %v, want %v", tt.name, r != nil, tt.kept)
			continue
		}
		if r != nil && !r.unread() {
			t.Errorf("%s: read before any read", tt.name)
		}
		for _, s := range tt.pieces {
			r.capture([]byte(s))
		}
		switch tt.end {
		case "eof":
			r.complete()
		case "fail":
			r.fail()
		}
		if got := r.isWhole(); got != tt.whole {
			t.Errorf("%s: whole %v, want %v", tt.name, got, tt.whole)
		}
		if r == nil || !tt.whole {
			continue
		}
		got, err := io.ReadAll(r.reader())
		if err != nil || string(got) != tt.sent {
			t.Errorf("%s: reader gave %q, %v, want %q", tt.name, got, err, tt.sent)
		}
		for _, chunked := range []bool{false, true} {
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			if err := r.send(w, chunked, new([24]byte)); err != nil {
				t.Fatal(err)
			}
			_ = w.Flush()
			want := tt.sent
			if chunked && want != "" {
				want = strconv.FormatInt(int64(len(want)), 16) + "\r\n" + want + "\r\n"
			}
			if b.String() != want {
				t.Errorf("%s: sent %q (chunked %v), want %q", tt.name, b.String(), chunked, want)
			}
		}
		rd := r.reader()
		r.release()
		if _, err := rd.Read(make([]byte, 4)); !errors.Is(err, errReplayReleased) {
			t.Errorf("%s: a read after release: %v", tt.name, err)
		}
		if r.isWhole() {
			t.Errorf("%s: whole after release", tt.name)
		}
	}
	if r := (&Proxy{opts: Options{RetryBodyBytes: -1}}).newReplayBody(true, 1); r != nil {
		t.Error("a copy made with copies off")
	}
}

// TestReplayBodyBuffer checks the buffer a copy takes under the default
// bound: a small declared body one of its own length, not a pooled buffer
// of the whole bound; a larger declared body and one of unknown length a
// pooled one. The small copy still keeps its body whole, and drops one
// that runs past its declared length.
func TestReplayBodyBuffer(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	bound := p.opts.RetryBodyBytes
	for _, tt := range []struct {
		name   string
		length int64
		cap    int
		pooled bool
	}{
		{"small declared", 10, 10, false},
		{"declared at the own-buffer limit", replayOwnBufBytes, replayOwnBufBytes, false},
		{"declared past the own-buffer limit", replayOwnBufBytes + 1, bound, true},
		{"declared at the bound", int64(bound), bound, true},
		{"unknown length", -1, bound, true},
	} {
		r := p.newReplayBody(true, tt.length)
		if r == nil {
			t.Fatalf("%s: no copy made", tt.name)
		}
		if got := cap(*r.buf); got != tt.cap || (r.pool != nil) != tt.pooled {
			t.Errorf("%s: buffer of %d bytes (pooled %v), want %d (pooled %v)", tt.name, got, r.pool != nil, tt.cap, tt.pooled)
		}
		r.release()
	}

	for _, tt := range []struct {
		name  string
		body  string
		whole bool
	}{
		{"declared length", "0123456789", true},
		{"past the declared length", "0123456789a", false},
	} {
		r := p.newReplayBody(true, 10)
		r.capture([]byte(tt.body[:4]))
		r.capture([]byte(tt.body[4:]))
		if got := r.isWhole(); got != tt.whole {
			t.Errorf("%s: whole %v, want %v", tt.name, got, tt.whole)
			continue
		}
		if !tt.whole {
			continue
		}
		if got, err := io.ReadAll(r.reader()); err != nil || string(got) != tt.body {
			t.Errorf("%s: reader gave %q, %v, want %q", tt.name, got, err, tt.body)
		}
		r.release()
	}
}
