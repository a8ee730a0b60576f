package trace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
)

// Format is how Run prints events. It implements flag.Value, for
// `--output`.
type Format string

// Output formats.
const (
	// FormatText prints one aligned human-readable line per event.
	FormatText Format = "text"
	// FormatJSON passes the agent's JSON lines (events and lost notices)
	// through unchanged.
	FormatJSON Format = "json"
)

func (f *Format) String() string {
	if f == nil || *f == "" {
		return string(FormatText)
	}
	return string(*f)
}

// Set parses a format name.
func (f *Format) Set(s string) error {
	switch Format(s) {
	case FormatText, FormatJSON:
		*f = Format(s)
		return nil
	}
	return fmt.Errorf("unknown output format %q (want text or json)", s)
}

// clientHandshakeTimeout bounds the wait for the agent's answer, so a
// socket that accepts but never speaks the protocol cannot hang the CLI.
const clientHandshakeTimeout = 10 * time.Second

// Run connects to the agent's trace socket, sends f and prints events to
// out until ctx is done, f.Count events were printed or f.Duration passed;
// those ends return nil. It returns an error when the agent is unreachable,
// refuses the filter or closes the stream.
func Run(ctx context.Context, socketPath string, f Filter, out io.Writer, format Format) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if format == "" {
		format = FormatText
	}
	if err := format.Set(string(format)); err != nil {
		return err
	}
	return run(ctx, socketPath, f, func() (sink, error) {
		return &printer{out: out, format: format, loc: time.Local}, nil
	})
}

// sink is what a trace stream's events and losses go to.
type sink interface {
	event(r *Record, raw []byte) error
	request(raw []byte) error
	lost(n uint64, where string, raw []byte) error
}

// run is Run with the output left to a sink, made once the agent accepted
// the filter.
func run(ctx context.Context, socketPath string, f Filter, newSink func() (sink, error)) error {
	if f.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.Duration)
		defer cancel()
	}

	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return dialError(socketPath, err)
	}
	defer conn.Close()
	// Closing the connection is what interrupts a blocked read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	err = stream(conn, f, newSink)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func stream(conn net.Conn, f Filter, newSink func() (sink, error)) error {
	hello, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode filter: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(clientHandshakeTimeout))
	if _, err := conn.Write(append(hello, '\n')); err != nil {
		return fmt.Errorf("send filter: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	if !sc.Scan() {
		return streamEnd(sc.Err(), "agent closed the connection before accepting the filter")
	}
	var first line
	if err := json.Unmarshal(sc.Bytes(), &first); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	switch first.Type {
	case TypeReady:
	case TypeError:
		return fmt.Errorf("agent refused the trace: %s", first.Error)
	default:
		return fmt.Errorf("unexpected agent answer %q", first.Type)
	}
	_ = conn.SetDeadline(time.Time{})

	p, err := newSink()
	if err != nil {
		return err
	}
	events := 0
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("decode trace line: %w", err)
		}
		switch l.Type {
		case TypeEvent, TypeRequest:
			var err error
			if l.Type == TypeRequest {
				err = p.request(sc.Bytes())
			} else {
				err = p.event(&l.Record, sc.Bytes())
			}
			if err != nil {
				return err
			}
			events++
			if f.Count > 0 && events >= f.Count {
				return nil
			}
		case TypeLost:
			if err := p.lost(l.Lost, l.Where, sc.Bytes()); err != nil {
				return err
			}
		case TypeError:
			return fmt.Errorf("agent ended the trace: %s", l.Error)
		default:
			// A newer agent's message type: not ours to print.
		}
	}
	return streamEnd(sc.Err(), "agent closed the trace stream")
}

func streamEnd(err error, eof string) error {
	if err != nil {
		return fmt.Errorf("read trace stream: %w", err)
	}
	return errors.New(eof)
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no agent listening on %s: %w", path, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("connect to agent on %s (the trace socket is root-only): %w", path, err)
	default:
		return fmt.Errorf("connect to agent on %s: %w", path, err)
	}
}

// printer writes events in the chosen format, one Write per line so that
// a terminal sees each event as it arrives.
type printer struct {
	out    io.Writer
	format Format
	loc    *time.Location
	buf    []byte
}

func (p *printer) event(r *Record, raw []byte) error {
	if p.format == FormatJSON {
		return p.raw(raw)
	}
	p.buf = appendText(p.buf[:0], r, p.loc)
	return p.write()
}

func (p *printer) lost(n uint64, where string, raw []byte) error {
	if p.format == FormatJSON {
		return p.raw(raw)
	}
	p.buf = append(p.buf[:0], "lost "...)
	p.buf = strconv.AppendUint(p.buf, n, 10)
	if n == 1 {
		p.buf = append(p.buf, " event"...)
	} else {
		p.buf = append(p.buf, " events"...)
	}
	p.buf = append(p.buf, lostWhy(where)...)
	p.buf = append(p.buf, '\n')
	return p.write()
}

// lostWhy says why events were lost, from a lost notice's "where".
func lostWhy(where string) string {
	if where == LostInDatapath {
		return " in the datapath (its ring buffer was full: every trace client lost them)"
	}
	return " (trace output too slow; narrow the filter)"
}

func (p *printer) raw(b []byte) error {
	p.buf = append(append(p.buf[:0], b...), '\n')
	return p.write()
}

func (p *printer) write() error {
	if _, err := p.out.Write(p.buf); err != nil {
		return fmt.Errorf("write trace output: %w", err)
	}
	return nil
}

// Column widths of the text format. They fit every stage, verdict and
// reason name, so columns stay aligned; device names longer than usual push
// the rest of their line right rather than being cut.
const (
	widthDevice  = 8
	widthStage   = 10 // tc-ingress
	widthVerdict = 8  // REDIRECT
	widthReason  = 19 // drop_snat_exhausted
)

// appendText renders one event as
//
//	TIME            DEVICE   STAGE      VERDICT  REASON              PROTO SRC > DST [-> SRC' > DST'] [svc=NAME] [backend=NAME] [at=LOCATION]
//
// A kernel drop (stage kernel) shows the kernel's reason name, the
// client's flow, the packet as the kernel dropped it, and where.
// The translated tuple only appears when the datapath rewrote the packet,
// and without the protocol, which translation never changes.
func appendText(b []byte, r *Record, loc *time.Location) []byte {
	b = r.Time.In(loc).AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ')
	b = appendPadded(b, r.Device, widthDevice)
	b = appendPadded(b, r.Stage, widthStage)
	b = appendPadded(b, r.Verdict, widthVerdict)
	b = appendPadded(b, r.Reason, widthReason)
	if r.Orig.Proto == "" {
		b = append(b, "? "...)
	} else {
		b = append(append(b, r.Orig.Proto...), ' ')
	}
	b = appendEnds(b, r.Orig)
	if x := r.Xlated; x != nil && *x != r.Orig {
		b = append(b, " -> "...)
		if x.Proto != r.Orig.Proto {
			b = append(append(b, x.Proto...), ' ')
		}
		b = appendEnds(b, *x)
	}
	b = appendName(b, " svc=", r.Service, r.ServiceID)
	b = appendName(b, " backend=", r.Backend, r.BackendID)
	if r.Location != "" {
		b = append(append(b, " at="...), r.Location...)
	}
	return append(b, '\n')
}

func appendPadded(b []byte, s string, width int) []byte {
	if s == "" {
		s = "-"
	}
	b = append(b, s...)
	for n := len(s); n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

// appendEnds writes "src > dst", tcpdump style, leaving "->" for the
// translation.
func appendEnds(b []byte, t Tuple) []byte {
	b = appendAddrPort(b, t.Src.String(), t.Src.IsValid())
	b = append(b, " > "...)
	return appendAddrPort(b, t.Dst.String(), t.Dst.IsValid())
}

func appendAddrPort(b []byte, s string, ok bool) []byte {
	if !ok {
		return append(b, '?')
	}
	return append(b, s...)
}

// appendName writes a service or backend by name, by ID when the agent
// had no name for it, and not at all when the event has none.
func appendName(b []byte, key, name string, id uint32) []byte {
	switch {
	case name != "":
		return append(append(b, key...), name...)
	case id != 0:
		return strconv.AppendUint(append(append(b, key...), '#'), uint64(id), 10)
	default:
		return b
	}
}
