package l7proxy

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLogFlushInterval bounds how long a line can sit in the buffer.
// Buffering turns one write syscall per request into one per batch.
const accessLogFlushInterval = 100 * time.Millisecond

// accessLog writes one JSON object per line. Lines are built by appending
// to a pooled buffer, without reflection or maps.
type accessLog struct {
	mu    sync.Mutex
	w     *bufio.Writer
	dirty bool
	stop  chan struct{}
	done  chan struct{}
}

func newAccessLog(w io.Writer) *accessLog {
	a := &accessLog{
		w:    bufio.NewWriterSize(w, 64<<10),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go a.flusher()
	return a
}

func (a *accessLog) flusher() {
	defer close(a.done)
	t := time.NewTicker(accessLogFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush()
		case <-a.stop:
			a.flush()
			return
		}
	}
}

func (a *accessLog) flush() {
	a.mu.Lock()
	if a.dirty {
		_ = a.w.Flush()
		a.dirty = false
	}
	a.mu.Unlock()
}

func (a *accessLog) close() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

func (a *accessLog) write(line []byte) {
	a.mu.Lock()
	_, _ = a.w.Write(line)
	a.dirty = true
	a.mu.Unlock()
}

var logBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// logEntry is the data of one access log line.
type logEntry struct {
	time     time.Time
	client   string
	method   string
	host     string
	path     string
	proto    string
	status   int
	bytes    int64
	duration time.Duration
	upstream string
	ingress  string
	service  string
	// requestID views the request's txn (requestid.go).
	requestID string
	err       error
}

// appendJSON renders e as a JSON object and a newline. The path is logged
// without the query string, which often carries tokens.
func (e *logEntry) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","client":`...)
	b = appendJSONString(b, e.client)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.host)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, e.proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(e.duration.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, e.upstream)
	b = append(b, `,"ingress":`...)
	b = appendJSONString(b, e.ingress)
	b = append(b, `,"service":`...)
	b = appendJSONString(b, e.service)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, e.requestID)
	if e.err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, e.err.Error())
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Control characters, quotes,
// backslashes, invalid UTF-8 (as U+FFFD) and U+2028/U+2029 are escaped, so
// a hostile Host or path cannot break the line structure.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
