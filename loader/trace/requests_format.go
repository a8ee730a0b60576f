package trace

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// request prints one request record.
func (p *printer) request(raw []byte) error {
	if p.format == FormatJSON {
		return p.raw(raw)
	}
	var r Request
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode trace request: %w", err)
	}
	p.buf = appendRequestText(p.buf[:0], &r, p.loc)
	return p.write()
}

// appendRequestText renders a request as one line,
//
//	TIME            STATUS METHOD HOST PATH PROTO bytes=N time=MS id=ID client=SRC > DST [tls sni=NAME alpn=PROTO] [steered=STAGE/DEV/VERDICT/REASON] [sk-lookup=REASON] route=KIND:NAME[ HOST PATH][#RULE] [upstream=SERVICE SRC > DST pod=NAME node=NODE] [error=ERR]
//
// followed by one indented event line per drop on either connection.
func appendRequestText(b []byte, r *Request, loc *time.Location) []byte {
	b = r.Time.In(loc).AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(append(b, ' '), r.Method...)
	b = append(append(b, ' '), r.Host...)
	b = append(b, r.Path...)
	b = append(append(b, ' '), r.Proto...)
	b = strconv.AppendInt(append(b, " bytes="...), r.Bytes, 10)
	b = strconv.AppendFloat(append(b, " time="...), r.DurationMS, 'f', 3, 64)
	b = append(b, "ms id="...)
	b = append(b, r.ID...)
	b = append(b, " client="...)
	b = appendEnds(b, r.Client.Tuple)
	if r.Client.TLS {
		b = append(append(b, " tls sni="...), orDash(r.Client.SNI)...)
		b = append(append(b, " alpn="...), orDash(r.Client.ALPN)...)
	}
	if len(r.Client.Steering) > 0 {
		e := &r.Client.Steering[0]
		b = append(b, " steered="...)
		b = append(append(append(append(b, e.Stage...), '/'), orDash(e.Device)...), '/')
		b = append(append(append(b, e.Verdict...), '/'), e.Reason...)
	}
	// The socket lookup that handed the connection to the proxy, when
	// not the first decision already shown.
	for i := 1; i < len(r.Client.Steering); i++ {
		if e := &r.Client.Steering[i]; e.Stage == loader.StageSkLookup.String() {
			b = append(append(b, " sk-lookup="...), e.Reason...)
			break
		}
	}
	b = append(b, " route="...)
	if r.Route.Kind == "" {
		b = append(b, '-')
	} else {
		b = append(append(append(b, r.Route.Kind...), ':'), r.Route.Name...)
		if r.Route.Path != "" {
			b = append(append(append(b, ' '), r.Route.Host...), r.Route.Path...)
		}
		if r.Route.Rule >= 0 {
			b = strconv.AppendInt(append(b, '#'), int64(r.Route.Rule), 10)
		}
	}
	if u := &r.Upstream; u.Tuple.Dst.IsValid() {
		b = append(append(b, " upstream="...), u.Service...)
		b = append(b, ' ')
		b = appendEnds(b, u.Tuple)
		if u.Pod != "" {
			b = append(append(b, " pod="...), u.Pod...)
		}
		if u.Node != "" {
			b = append(append(b, " node="...), u.Node...)
		}
	}
	if r.Error != "" {
		b = strconv.AppendQuote(append(b, " error="...), r.Error)
	}
	b = append(b, '\n')
	for _, evs := range [...][]Record{r.Client.Drops, r.Upstream.Drops} {
		for i := range evs {
			b = appendText(append(b, "  drop "...), &evs[i], loc)
		}
	}
	return b
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
