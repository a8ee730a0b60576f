package l7proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2raw is a raw HTTP/2 client (h2c with prior knowledge) that sends
// whatever frames a test needs, valid or not.
type h2raw struct {
	t    testing.TB
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// dialH2 opens a connection, sends the preface and the given settings,
// and reads the server's SETTINGS.
func dialH2(t testing.TB, addr string, settings ...http2.Setting) *h2raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &h2raw{t: t, conn: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := c.Write(h2Preface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("first server frame %v, want SETTINGS", f)
	}
	if err := h.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return h
}

// block encodes header fields given as name, value pairs.
func (h *h2raw) block(kv ...string) []byte {
	h.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(h.hbuf.Bytes())
}

// get sends a GET request on stream id.
func (h *h2raw) get(id uint32, path string, extra ...string) {
	h.t.Helper()
	if err := h.tryGet(id, path, extra...); err != nil {
		h.t.Fatal(err)
	}
}

// tryGet is get for a sender that expects the server to hang up on it
// (and may not fail the test from its goroutine).
func (h *h2raw) tryGet(id uint32, path string, extra ...string) error {
	kv := append([]string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", path}, extra...)
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(kv...),
		EndStream: true, EndHeaders: true})
}

// until reads frames until match returns true, failing on a connection
// end first.
func (h *h2raw) until(what string, match func(http2.Frame) bool) http2.Frame {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

// goAway reads until GOAWAY and returns its code.
func (h *h2raw) goAway() http2.ErrCode {
	h.t.Helper()
	f := h.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	return f.(*http2.GoAwayFrame).ErrCode
}

// rst reads until a RST_STREAM of stream id and returns its code.
func (h *h2raw) rst(id uint32) http2.ErrCode {
	h.t.Helper()
	f := h.until("RST_STREAM", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id
	})
	return f.(*http2.RSTStreamFrame).ErrCode
}

// response reads stream id's response: status, body and whether it
// ended cleanly.
func (h *h2raw) response(id uint32) (status string, body []byte) {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("stream %d: %v", id, err)
		}
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				status = s
			}
			if f.StreamEnded() {
				return status, body
			}
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				return status, body
			}
		case *http2.RSTStreamFrame:
			h.t.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
	}
}

func h2TestProxy(t *testing.T, opts Options, h http.HandlerFunc) *testProxy {
	b := startBackend(t, "b", h)
	return startProxy(t, opts, singleRoute(b))
}

func okHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "ok")
}

// TestH2ServerMalformed checks that malformed requests (RFC 9113 §8.1.1)
// reset their stream with PROTOCOL_ERROR and leave the connection usable.
func TestH2ServerMalformed(t *testing.T) {
	p := h2TestProxy(t, Options{}, okHandler)
	base := []string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/"}
	tests := []struct {
		name string
		kv   []string
	}{
		{"upper-case name", append(base[:8:8], "X-Upper", "1")},
		{"connection field", append(base[:8:8], "connection", "keep-alive")},
		{"transfer-encoding", append(base[:8:8], "transfer-encoding", "chunked")},
		{"te other than trailers", append(base[:8:8], "te", "gzip")},
		{"no :path", base[:6]},
		{"empty :path", []string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", ""}},
		{"relative :path", []string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", "a"}},
		{"pseudo after regular", []string{":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/"}},
		{"unknown pseudo", append(base[:8:8], ":foo", "1")},
		{"repeated :path", append(base[:8:8], ":path", "/b")},
		{"response pseudo", append(base[:8:8], ":status", "200")},
		{"bad value", append(base[:8:8], "x-a", "a\x00b")},
		{"bad content-length", append(base[:8:8], "content-length", "x")},
		{"content-length without body", append(base[:8:8], "content-length", "3")},
	}
	h := dialH2(t, p.httpAddr)
	id := uint32(1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(tt.kv...),
				EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			if code := h.rst(id); code != http2.ErrCodeProtocol {
				t.Errorf("RST_STREAM %v, want PROTOCOL_ERROR", code)
			}
			id += 2
		})
	}
	h.t = t
	h.get(id, "/")
	if status, body := h.response(id); status != "200" || string(body) != "ok" {
		t.Errorf("after the malformed requests: %s %q", status, body)
	}
}

// TestH2ServerFloods checks the connection-level defences: each abuse
// ends in GOAWAY with the expected code rather than unbounded work.
func TestH2ServerFloods(t *testing.T) {
	p := h2TestProxy(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
	})
	tests := []struct {
		name string
		send func(h *h2raw) error
		want http2.ErrCode
	}{
		{"rapid reset (CVE-2023-44487)", func(h *h2raw) error {
			for id := uint32(1); id < 2*2*h2MaxResetsPerSec; id += 2 {
				if h.tryGet(id, "/") != nil || h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return nil // the server hung up: fine, GOAWAY is read next
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm},
		{"CONTINUATION flood (CVE-2024-27316)", func(h *h2raw) error {
			frag := h.block(":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag}); err != nil {
				return err
			}
			big := h.block("x-pad", strings.Repeat("a", 8000))
			for range 1000 {
				if err := h.fr.WriteContinuation(1, false, big); err != nil {
					return nil // the server hung up: fine, GOAWAY is read next
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm},
		{"empty CONTINUATION flood", func(h *h2raw) error {
			frag := h.block(":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag}); err != nil {
				return err
			}
			for range 10000 {
				if err := h.fr.WriteContinuation(1, false, nil); err != nil {
					return nil
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm},
		{"PING flood", func(h *h2raw) error {
			for range 2 * h2MaxChurnPerSec {
				if err := h.fr.WritePing(false, [8]byte{}); err != nil {
					return nil
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm},
		{"SETTINGS flood", func(h *h2raw) error {
			for range 2 * h2MaxChurnPerSec {
				if err := h.fr.WriteSettings(); err != nil {
					return nil
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm},
		{"window overflow", func(h *h2raw) error {
			_ = h.fr.WriteWindowUpdate(0, 1<<31-1)
			return h.fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		{"even stream id", func(h *h2raw) error {
			return h.tryGet(2, "/")
		}, http2.ErrCodeProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := dialH2(t, p.httpAddr)
			go func() { _ = tt.send(h) }()
			if code := h.goAway(); code != tt.want {
				t.Errorf("GOAWAY %v, want %v", code, tt.want)
			}
		})
	}
}

// TestH2ServerLimits covers the per-stream answers: too many concurrent
// streams are refused, an oversized header list gets 431, a body longer
// than its content-length is malformed.
func TestH2ServerLimits(t *testing.T) {
	release := make(chan struct{})
	p := h2TestProxy(t, Options{MaxHeaderBytes: 4096}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		okHandler(w, r)
	})
	t.Run("concurrent streams", func(t *testing.T) {
		defer close(release)
		h := dialH2(t, p.httpAddr)
		id := uint32(1)
		for range h2MaxStreams {
			h.get(id, "/slow")
			id += 2
		}
		h.get(id, "/slow")
		if code := h.rst(id); code != http2.ErrCodeRefusedStream {
			t.Errorf("stream over the limit: %v, want REFUSED_STREAM", code)
		}
	})
	t.Run("header list too large", func(t *testing.T) {
		h := dialH2(t, p.httpAddr)
		h.get(1, "/", "x-big", strings.Repeat("a", 5000))
		if status, _ := h.response(1); status != "431" {
			t.Errorf("status %s, want 431", status)
		}
	})
	t.Run("body over the limit answered early", func(t *testing.T) {
		h := dialH2(t, p.httpAddr)
		frag := h.block(":method", "PUT", ":scheme", "http", ":authority", "x", ":path", "/", "content-length", "2000000")
		_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: true})
		go func() {
			for range 8 {
				if h.fr.WriteData(1, false, make([]byte, 16000)) != nil {
					return
				}
			}
		}()
		var status, length string
		var ended, reset, goaway bool
		for !(ended && reset && goaway) {
			f, err := h.fr.ReadFrame()
			if err != nil {
				t.Fatalf("status %q ended %v reset %v goaway %v: %v", status, ended, reset, goaway, err)
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				status, length = f.PseudoValue("status"), ""
				for _, hf := range f.RegularFields() {
					if hf.Name == "content-length" {
						length = hf.Value
					}
				}
			case *http2.DataFrame:
				ended = f.StreamEnded()
			case *http2.RSTStreamFrame:
				if !ended || f.ErrCode != http2.ErrCodeNo {
					t.Fatalf("RST_STREAM %v, response ended: %v", f.ErrCode, ended)
				}
				reset = true
			case *http2.GoAwayFrame:
				goaway = f.ErrCode == http2.ErrCodeNo
			}
		}
		if status != "413" || length != "25" {
			t.Errorf("status %s content-length %q, want 413 and 25", status, length)
		}
	})
	t.Run("body over content-length", func(t *testing.T) {
		h := dialH2(t, p.httpAddr)
		frag := h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/", "content-length", "2")
		_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: true})
		_ = h.fr.WriteData(1, true, []byte("abc"))
		if code := h.rst(1); code != http2.ErrCodeProtocol {
			t.Errorf("RST_STREAM %v, want PROTOCOL_ERROR", code)
		}
	})
}

// TestH2ServerFlowControl sends a response larger than the client's
// windows: it arrives as the client opens them, and a client that never
// does is cut off after WriteTimeout.
func TestH2ServerFlowControl(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	p := h2TestProxy(t, Options{WriteTimeout: 300 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(big)
	})
	t.Run("windows opened", func(t *testing.T) {
		h := dialH2(t, p.httpAddr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
		h.get(1, "/")
		var got []byte
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := f.(*http2.DataFrame); ok {
				if len(d.Data()) > 1000 {
					t.Fatalf("DATA of %d bytes in a 1000-byte window", len(d.Data()))
				}
				got = append(got, d.Data()...)
				if d.StreamEnded() {
					break
				}
				if n := uint32(len(d.Data())); n > 0 {
					_ = h.fr.WriteWindowUpdate(0, n)
					_ = h.fr.WriteWindowUpdate(1, n)
				}
			}
		}
		if !bytes.Equal(got, big) {
			t.Errorf("got %d bytes, want %d", len(got), len(big))
		}
	})
	t.Run("zero window stall", func(t *testing.T) {
		h := dialH2(t, p.httpAddr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		h.get(1, "/")
		if code := h.rst(1); code != http2.ErrCodeFlowControl {
			t.Errorf("RST_STREAM %v, want FLOW_CONTROL_ERROR", code)
		}
	})
}

// TestH2ServerShutdown checks graceful shutdown in two steps: a first
// GOAWAY naming every stream id and a PING; a request sent before the
// client saw it is served; after the PING's ack the final GOAWAY names the
// last stream taken, later streams are ignored without a reset, the
// streams taken complete, and the connection then closes without a reset.
func TestH2ServerShutdown(t *testing.T) {
	var started sync.Once
	startedc := make(chan struct{})
	p := h2TestProxy(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		started.Do(func() { close(startedc) })
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})
	h := dialH2(t, p.httpAddr)
	h.get(1, "/first")
	<-startedc
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errc <- p.Shutdown(ctx)
	}()
	var goaways []*http2.GoAwayFrame
	status := map[uint32]string{}
	body := map[uint32][]byte{}
	var readErr error
	for readErr == nil {
		var f http2.Frame
		f, readErr = h.fr.ReadFrame()
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			goaways = append(goaways, f)
			if len(goaways) == 1 {
				// Crossing the first GOAWAY: still served.
				h.get(3, "/crossing")
			} else {
				// After the final one: ignored, its data too.
				frag := h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/late")
				_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: frag, EndHeaders: true})
				_ = h.fr.WriteData(5, true, []byte("late"))
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = h.fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			t.Errorf("stream %d reset (%v) during shutdown", f.StreamID, f.ErrCode)
		case *http2.MetaHeadersFrame:
			status[f.StreamID] = f.PseudoValue("status")
		case *http2.DataFrame:
			body[f.StreamID] = append(body[f.StreamID], f.Data()...)
		}
	}
	if !errors.Is(readErr, io.EOF) {
		t.Errorf("connection ended with %v, want EOF (a close, not a reset)", readErr)
	}
	if len(goaways) != 2 {
		t.Fatalf("%d GOAWAY frames, want 2", len(goaways))
	}
	for i, want := range []uint32{0x7fffffff, 3} {
		if g := goaways[i]; g.LastStreamID != want || g.ErrCode != http2.ErrCodeNo {
			t.Errorf("GOAWAY %d: last=%d code=%v, want %d NO_ERROR", i+1, g.LastStreamID, g.ErrCode, want)
		}
	}
	for id, path := range map[uint32]string{1: "/first", 3: "/crossing"} {
		if status[id] != "200" || string(body[id]) != "done "+path {
			t.Errorf("stream %d: %s %q", id, status[id], body[id])
		}
	}
	if _, ok := status[5]; ok {
		t.Errorf("stream 5 after the final GOAWAY was answered %s", status[5])
	}
	if err := <-errc; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestH2ServerShutdownIdle checks that an idle connection told to go away
// closes cleanly even when the client does not ack the PING and sends a
// request after the final GOAWAY: the request is read and dropped, so the
// close is a FIN the client reads after the GOAWAY, not a reset.
func TestH2ServerShutdownIdle(t *testing.T) {
	p := h2TestProxy(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	h := dialH2(t, p.httpAddr)
	h.get(1, "/")
	if st, _ := h.response(1); st != "200" {
		t.Fatalf("status %s", st)
	}
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errc <- p.Shutdown(ctx)
	}()
	var last []uint32
	var readErr error
	for readErr == nil {
		var f http2.Frame
		f, readErr = h.fr.ReadFrame()
		if g, ok := f.(*http2.GoAwayFrame); ok {
			last = append(last, g.LastStreamID)
			if len(last) == 2 {
				h.get(3, "/late")
			}
		}
	}
	if !errors.Is(readErr, io.EOF) {
		t.Errorf("connection ended with %v, want EOF (a close, not a reset)", readErr)
	}
	if len(last) != 2 || last[0] != 0x7fffffff || last[1] != 1 {
		t.Errorf("GOAWAY last stream ids %v, want [2147483647 1]", last)
	}
	if err := <-errc; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestH2ServerIdleTimeout checks that a connection without streams is
// closed after ClientIdleTimeout.
func TestH2ServerIdleTimeout(t *testing.T) {
	p := h2TestProxy(t, Options{ClientIdleTimeout: 200 * time.Millisecond}, okHandler)
	h := dialH2(t, p.httpAddr)
	h.get(1, "/")
	h.response(1)
	start := time.Now()
	for {
		if _, err := h.fr.ReadFrame(); err != nil {
			if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset") {
				break
			}
			t.Fatalf("connection not closed: %v", err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v", d)
	}
}

// TestH2ServerRequestBody streams a request body in several DATA frames
// (within the stream's window) with a trailer; the upstream gets it
// whole.
func TestH2ServerRequestBody(t *testing.T) {
	p := h2TestProxy(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b[:min(len(b), 1000)])
		fmt.Fprintf(w, "|%d|%s", len(b), r.Trailer.Get("X-Sum"))
	})
	h := dialH2(t, p.httpAddr)
	frag := h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/")
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: true})
	var want []byte
	for i := range 20 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 10000)
		want = append(want, chunk...)
		if err := h.fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("x-sum", "1"),
		EndStream: true, EndHeaders: true})
	status, body := h.response(1)
	if wantBody := fmt.Sprintf("%s|%d|1", want[:1000], len(want)); status != "200" || string(body) != wantBody {
		t.Errorf("status %s, body %q, want %q", status, body[max(0, len(body)-20):], wantBody[len(wantBody)-20:])
	}
}

// TestH2ServerBodyTimeout checks that a request body that stops coming
// gets 400 (BodyTimeout between reads, ReadTimeout for the whole body),
// as on HTTP/1.x.
func TestH2ServerBodyTimeout(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"between reads", Options{BodyTimeout: 200 * time.Millisecond}},
		{"whole body", Options{ReadTimeout: 300 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := h2TestProxy(t, tt.opts, okHandler)
			h := dialH2(t, p.httpAddr)
			frag := h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/")
			_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: true})
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				// A trickle for the whole body's limit, nothing after.
				for range 3 {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					_ = h.fr.WriteData(1, false, []byte("x"))
				}
			}()
			start := time.Now()
			if status, _ := h.response(1); status != "400" {
				t.Errorf("status %s, want 400", status)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("answered after %v", d)
			}
		})
	}
}

// TestH2ServerExpectContinue checks that a client waiting for 100
// Continue gets it once its body is wanted, then the response.
func TestH2ServerExpectContinue(t *testing.T) {
	p := h2TestProxy(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	h := dialH2(t, p.httpAddr)
	frag := h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/",
		"content-length", "5", "expect", "100-continue")
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: true})
	f := h.until("100 Continue", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
	if s := f.(*http2.MetaHeadersFrame).PseudoValue("status"); s != "100" {
		t.Fatalf("first response status %s, want 100", s)
	}
	_ = h.fr.WriteData(1, true, []byte("hello"))
	if status, body := h.response(1); status != "200" || string(body) != "hello" {
		t.Errorf("got %s %q", status, body)
	}
}

// FuzzH2Server feeds arbitrary bytes after the preface into the HTTP/2
// server: it must end the connection or answer, never panic or hang.
func FuzzH2Server(f *testing.F) {
	var seed bytes.Buffer
	fr := http2.NewFramer(&seed, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/a?b"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, false, []byte("body"))
	_ = fr.WriteWindowUpdate(1, 100)
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 5, 1, 0x25, 0, 0, 0, 3, 0, 0, 0, 3, 1})
	p, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newBytesConn(append(bytes.Clone(h2Preface), data...))
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.h2.serveConn(c, false, nil)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection not finished")
		}
	})
}

func TestGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"300m", 300 * time.Millisecond, true},
		{"1S", time.Second, true},
		{"2H", 2 * time.Hour, true},
		{"5M", 5 * time.Minute, true},
		{"10u", 10 * time.Microsecond, true},
		{"99999999n", 99999999, true},
		{"123456789S", 0, false}, // more than 8 digits
		{"1", 0, false},
		{"1x", 0, false},
		{"-1S", 0, false},
		{"S", 0, false},
	}
	for _, tt := range tests {
		got, ok := grpcTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("grpcTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
