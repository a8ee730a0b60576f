package l7proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// The streams of the HTTP/2 server: their state, the request body as the
// client sends it (flow-controlled by what the pipeline reads), and the
// goroutine that runs each request through the pipeline. Header blocks
// are decoded in h2server_headers.go, responses written in
// h2server_response.go.

// h2srvStream is one stream of an HTTP/2 connection and the request it
// carries through the pipeline.
type h2srvStream struct {
	c  *h2conn
	id uint32
	hs h2stream // the pipeline's view

	// The request, decoded into pooled storage.
	req  http.Request
	u    url.URL
	hdr  http.Header
	vals []string
	// declared is the content-length (-1: none); tooLarge: the header
	// list was over the limit (431); expect: the client waits for 100
	// Continue before it sends the body.
	declared int64
	tooLarge bool
	expect   bool

	// Guarded by c.mu.
	remoteDone  bool // END_STREAM received
	localDone   bool // END_STREAM or RST_STREAM sent
	reset       bool // the stream was reset (either side) or the connection died
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	body        []byte // received, unread request body
	bodyOff     int
	bodyN       int64
	bodyClosed  bool // the pipeline stopped reading the body
	watched     *upConn
	touched     bool // the reset closed watched
	cancel      context.CancelFunc

	gone    atomic.Bool
	bodyCh  chan struct{} // data, end or reset arrived
	bodyTmr *time.Timer
	// bodyDeadline bounds the whole request (Options.ReadTimeout; zero:
	// none).
	bodyDeadline time.Time

	// The response, written by the stream's goroutine.
	resp        http.Header
	status      int
	headersSent bool
	trailerKeys []string
	pend        []byte
	aborted     bool
}

var srvStreams = sync.Pool{New: func() any {
	return &h2srvStream{hdr: make(http.Header, 16), resp: make(http.Header, 8), bodyCh: make(chan struct{}, 1)}
}}

func newSrvStream(c *h2conn, sid uint32) *h2srvStream {
	st := srvStreams.Get().(*h2srvStream)
	st.c, st.id = c, sid
	st.declared = -1
	st.recvWindow = h2StreamWindow
	return st
}

// free returns a stream to the pool once nothing refers to it any more.
func (st *h2srvStream) free() {
	clear(st.hdr)
	clear(st.resp)
	clear(st.vals)
	hdr, resp, vals, ch, tmr, body := st.hdr, st.resp, st.vals[:0], st.bodyCh, st.bodyTmr, st.body[:0]
	select {
	case <-ch:
	default:
	}
	*st = h2srvStream{hdr: hdr, resp: resp, vals: vals, bodyCh: ch, bodyTmr: tmr, body: body}
	srvStreams.Put(st)
}

// queue stores received request body bytes. Called with mu held.
func (st *h2srvStream) queue(data []byte) {
	if len(data) == 0 {
		return
	}
	if st.bodyOff > 0 && st.bodyOff == len(st.body) {
		st.body, st.bodyOff = st.body[:0], 0
	}
	if st.bodyClosed {
		st.recvUnacked += int64(len(data))
		st.c.giveBack(int64(len(data)))
		return
	}
	st.body = append(st.body, data...)
	st.wake()
}

// remoteEnd records the end of the request. Called with mu held.
func (st *h2srvStream) remoteEnd() {
	st.remoteDone = true
	st.wake()
	if st.localDone {
		st.c.remove(st, false)
	}
}

func (st *h2srvStream) wake() {
	select {
	case st.bodyCh <- struct{}{}:
	default:
	}
}

// clientReset records that the stream is over for the client: its
// pipeline sees the client gone. Called with mu held.
func (st *h2srvStream) clientReset() {
	if st.reset {
		return
	}
	st.reset = true
	st.gone.Store(true)
	if uc := st.watched; uc != nil {
		// Closed rather than given a past deadline, which the pipeline
		// could move meanwhile; a touched connection is never reused.
		uc.close()
		st.touched = true
	}
	if st.cancel != nil {
		st.cancel()
	}
	st.wake()
	st.c.cond.Broadcast()
}

// context is the stream's context for an http.Transport: done when the
// client resets the stream or goes away.
func (st *h2srvStream) context() context.Context {
	c := st.c
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	if st.reset {
		cancel()
	}
	st.cancel = cancel
	c.mu.Unlock()
	return ctx
}

// watch makes a client reset interrupt whatever waits on uc, until
// unwatch; it reports false if uc was touched.
func (st *h2srvStream) watch(uc *upConn) {
	c := st.c
	c.mu.Lock()
	st.watched = uc
	if st.reset {
		uc.close()
		st.touched = true
	}
	c.mu.Unlock()
}

func (st *h2srvStream) unwatch() bool {
	c := st.c
	c.mu.Lock()
	st.watched = nil
	t := st.touched
	c.mu.Unlock()
	return !t
}

// srvBody is a stream's request body as the pipeline reads it.
type srvBody h2srvStream

var errBodyClosed = errors.New("request body closed")

func (b *srvBody) Read(p []byte) (int, error) {
	st := (*h2srvStream)(b)
	c := st.c
	c.mu.Lock()
	for {
		if n := len(st.body) - st.bodyOff; n > 0 {
			k := copy(p, st.body[st.bodyOff:])
			st.bodyOff += k
			if st.bodyOff == len(st.body) {
				st.body, st.bodyOff = st.body[:0], 0
			}
			st.consumed(int64(k))
			c.mu.Unlock()
			return k, nil
		}
		switch {
		case st.bodyClosed:
			c.mu.Unlock()
			return 0, errBodyClosed
		case st.remoteDone:
			c.mu.Unlock()
			return 0, io.EOF
		case st.reset:
			c.mu.Unlock()
			return 0, errClientReset
		}
		if st.expect {
			// The request was accepted: the client may send its body.
			st.expect = false
			if !st.headersSent && st.bodyN == 0 && !c.dead {
				c.hbuf.b = c.hbuf.b[:0]
				_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
				c.writeBlock(st.id, false)
			}
		}
		c.mu.Unlock()
		if err := st.waitBody(); err != nil {
			return 0, err
		}
		c.mu.Lock()
	}
}

// consumed gives read body bytes back to the client's windows, in
// batches. Called with mu held.
func (st *h2srvStream) consumed(n int64) {
	c := st.c
	st.recvUnacked += n
	if !st.remoteDone && !st.reset && st.recvUnacked >= h2StreamWindow/4 {
		c.writeWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
		c.kick()
	}
	c.giveBack(n)
}

var errClientReset = errors.New("client reset the stream")

// waitBody waits for more of the body, at most Options.BodyTimeout: a body
// that stops coming gets 400, as on HTTP/1.x.
func (st *h2srvStream) waitBody() error {
	d := st.c.p.opts.BodyTimeout
	if !st.bodyDeadline.IsZero() {
		left := time.Until(st.bodyDeadline)
		if left <= 0 {
			return badRequest("request body timeout")
		}
		d = min(d, left)
	}
	if st.bodyTmr == nil {
		st.bodyTmr = time.NewTimer(d)
	} else {
		st.bodyTmr.Reset(d)
	}
	select {
	case <-st.bodyCh:
		st.bodyTmr.Stop()
		return nil
	case <-st.bodyTmr.C:
		return badRequest("request body timeout")
	}
}

// Close stops reading: a read waiting for the client returns, and what
// still arrives is discarded.
func (b *srvBody) Close() error {
	st := (*h2srvStream)(b)
	c := st.c
	c.mu.Lock()
	if !st.bodyClosed {
		st.bodyClosed = true
		if n := int64(len(st.body) - st.bodyOff); n > 0 {
			st.body, st.bodyOff = st.body[:0], 0
			c.giveBack(n)
		}
		st.wake()
	}
	c.mu.Unlock()
	return nil
}

// run serves the stream's request through the pipeline, then ends the
// stream.
func (st *h2srvStream) run() {
	c := st.c
	defer c.handlers.Done()
	st.hs.serve(st)
	st.end()
	c.mu.Lock()
	c.active--
	// Only a stream whose request was received whole is reused: with
	// the request unfinished, the reader may still be decoding its
	// trailer section into it.
	recycle := st.remoteDone && c.streams[st.id] != st
	c.setIdleDeadline()
	if c.goingAway && c.active == 0 && len(c.streams) == 0 {
		// Wake the reader so the connection closes.
		c.wakeToClose()
	}
	c.mu.Unlock()
	if recycle && st.hs.reusable() {
		st.free()
	}
}
