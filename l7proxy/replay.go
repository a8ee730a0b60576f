package l7proxy

import (
	"bufio"
	"errors"
	"io"
	"sync"
)

// Replaying request bodies. A request that its rule's retry policy may
// send again keeps a copy of its body, taken as the body streams to the
// first attempt's upstream (the first attempt waits for nothing); a retry
// sends the copy, with the same head. A body of a small declared length
// is copied into a buffer of just that length; any other, into one pooled
// buffer of Options.RetryBodyBytes, so that a request does not hold the
// whole bound for a few bytes. A body longer than the buffer (declared,
// or as it turns out), or one the client did not send whole, is not kept:
// the request is then not retried, as Envoy and nginx do with bodies over
// their buffer limits. A pooled buffer goes back to the pool when the
// request finishes.
//
// A request whose body was not read at all (its connect failed) needs no
// copy to go elsewhere: the body is still the client's to send.

// replayBody is the copy of one request's body.
type replayBody struct {
	// pool is where buf goes back; nil for a buffer of its own.
	pool *sync.Pool
	// mu guards the copy: an http.Transport may still read an earlier
	// attempt's body from its own goroutine while the next one starts.
	mu sync.Mutex
	// buf holds the body read so far; nil once dropped (too long) or
	// released.
	buf *[]byte
	// want is the declared length; -1: unknown.
	want int64
	// read: some of the body, or its end, was read from the client;
	// whole: all of it is in buf.
	read, whole bool
}

// errReplayReleased fails a read of a copy after its request finished.
var errReplayReleased = errors.New("request body copy released")

// newReplayBody returns the copy to fill for a request whose body has
// the declared length (-1: unknown); nil when there is no body, or it is
// longer than the buffers, or copies are off.
func (p *Proxy) newReplayBody(hasBody bool, length int64) *replayBody {
	if !hasBody || p.opts.RetryBodyBytes < 0 || length > int64(p.opts.RetryBodyBytes) {
		return nil
	}
	if length >= 0 && length <= replayOwnBufBytes {
		b := make([]byte, 0, length)
		return &replayBody{buf: &b, want: length}
	}
	return &replayBody{pool: &p.replayBufs, buf: p.replayBufs.Get().(*[]byte), want: length}
}

// replayOwnBufBytes is the longest declared body copied into a buffer of
// its own length rather than a pooled one: allocating that much costs
// less than holding a pooled buffer of the whole bound.
const replayOwnBufBytes = 4 << 10

// newReplayBuf makes the copy buffers of size bytes (replayBufs.New).
func newReplayBuf(size int) func() any {
	return func() any {
		b := make([]byte, 0, size)
		return &b
	}
}

// capture adds a piece of the body as it is read from the client.
func (r *replayBody) capture(p []byte) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.read = true
	if r.buf == nil || len(p) == 0 {
		return
	}
	if len(*r.buf)+len(p) > cap(*r.buf) {
		r.drop()
		return
	}
	*r.buf = append(*r.buf, p...)
	// A body of a declared length is whole with its last byte: the
	// upstream may answer before the reader sees the end.
	if r.want >= 0 && int64(len(*r.buf)) == r.want {
		r.whole = true
	}
}

// complete records that the body was read to its end.
func (r *replayBody) complete() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.read = true
	r.whole = r.buf != nil
	r.mu.Unlock()
}

// fail records that the client's body broke: no copy is kept. A copy
// already whole stays: the read that failed was one interrupted after
// the body's last byte.
func (r *replayBody) fail() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.read = true
	if !r.whole {
		r.drop()
	}
	r.mu.Unlock()
}

// isWhole reports whether the whole body is in the copy.
func (r *replayBody) isWhole() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.whole
}

// unread reports whether nothing of the body was read yet.
func (r *replayBody) unread() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.read
}

// release gives the buffer back; reads of the copy fail from now on.
func (r *replayBody) release() {
	r.mu.Lock()
	r.drop()
	r.mu.Unlock()
}

// drop gives the buffer back (r.mu held).
func (r *replayBody) drop() {
	r.whole = false
	if r.buf == nil {
		return
	}
	if r.pool != nil {
		*r.buf = (*r.buf)[:0]
		r.pool.Put(r.buf)
	}
	r.buf = nil
}

// send writes the copy into w: as it is, or as one chunk (the caller
// ends the chunked body).
func (r *replayBody) send(w *bufio.Writer, chunked bool, num *[24]byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		return errReplayReleased
	}
	b := *r.buf
	if len(b) == 0 {
		return nil
	}
	if chunked {
		return writeChunk(w, b, num)
	}
	_, err := w.Write(b)
	return err
}

// reader returns the copy as a body to send again.
func (r *replayBody) reader() io.ReadCloser { return &replayReader{r: r} }

// replayReader reads a copy from the start.
type replayReader struct {
	r   *replayBody
	off int
}

func (rr *replayReader) Read(p []byte) (int, error) {
	r := rr.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		return 0, errReplayReleased
	}
	if rr.off >= len(*r.buf) {
		return 0, io.EOF
	}
	n := copy(p, (*r.buf)[rr.off:])
	rr.off += n
	return n, nil
}

func (rr *replayReader) Close() error { return nil }
