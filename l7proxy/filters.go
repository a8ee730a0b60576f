package l7proxy

import (
	"bufio"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unsafe"
)

// The Gateway API filters a route decision carries (decide sets them in
// the txn): the client sides apply them when they write the request
// upstream and the response back, whatever the upstream kind.

// drops reports whether a field of the message is replaced or removed.
func (e *HeaderEdit) drops(name string) bool {
	if e == nil {
		return false
	}
	for _, f := range e.Set {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	for _, r := range e.Remove {
		if strings.EqualFold(r, name) {
			return true
		}
	}
	return false
}

// write writes the fields the edit sets and adds, after the message's
// own fields (less those it drops).
func (e *HeaderEdit) write(w *bufio.Writer) {
	if e == nil {
		return
	}
	for _, f := range e.Set {
		if editable(f.Name) {
			writeFieldLines(w, f.Name, []string{f.Value})
		}
	}
	for _, f := range e.Add {
		if editable(f.Name) {
			writeFieldLines(w, f.Name, []string{f.Value})
		}
	}
}

// editable reports whether an edit may write a field. The message's
// framing (Content-Length, Transfer-Encoding), Host and the hop-by-hop
// fields are the proxy's own, written after the edit's fields: an edit
// writing them too would send two framings, which an upstream or client
// may read differently from the proxy (request smuggling on a pooled
// connection), and an edit's values can come from outside (an auth
// service's answer). Edits setting or adding them are skipped wherever
// they come from (Gateway filters, annotations).
func editable(name string) bool {
	k := classify(unsafe.Slice(unsafe.StringData(name), len(name)))
	return !k.hopByHop() && k != hkContentLength && k != hkHost
}

// EditableField reports whether a header edit may set or add the field
// name (any case): not framing, Host or hop-by-hop. The controller uses
// it to refuse such names in annotations, which the proxy would skip.
func EditableField(name string) bool { return editable(name) }

// apply edits a header map in place.
func (e *HeaderEdit) apply(h http.Header) {
	if e == nil {
		return
	}
	for _, r := range e.Remove {
		delete(h, r)
	}
	for _, f := range e.Set {
		if editable(f.Name) {
			h[f.Name] = []string{f.Value}
		}
	}
	for _, f := range e.Add {
		if editable(f.Name) {
			h[f.Name] = append(h[f.Name][:len(h[f.Name]):len(h[f.Name])], f.Value)
		}
	}
}

// modifyPath applies a path modifier to a request path; prefix is the
// PathPrefix the rule matched (without trailing '/', "/" for the root).
func modifyPath(pm *PathModifier, prefix, path string) string {
	if pm.ReplaceFullPath {
		return pm.Value
	}
	rest := path
	if prefix != "/" {
		rest = path[len(prefix):]
	}
	out := strings.TrimSuffix(pm.Value, "/") + rest
	if out == "" || out[0] != '/' {
		out = "/" + out
	}
	return out
}

// rewriteRegex applies a ReplaceRegexMatch modifier (compiled pattern
// re) to a path, as nginx's rewrite does: the whole path becomes the
// template with $1 to $9 expanded, when re matches. The template was
// checked by compileRewrite.
func rewriteRegex(re *regexp.Regexp, tmpl, path string) string {
	m := re.FindStringSubmatchIndex(path)
	if m == nil {
		return path
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(tmpl, '$')
		if i < 0 || i+1 >= len(tmpl) {
			b.WriteString(tmpl)
			break
		}
		b.WriteString(tmpl[:i])
		if g := int(tmpl[i+1] - '0'); 2*g+1 < len(m) && m[2*g] >= 0 {
			b.WriteString(path[m[2*g]:m[2*g+1]])
		}
		tmpl = tmpl[i+2:]
	}
	out := b.String()
	if out == "" || out[0] != '/' {
		out = "/" + out
	}
	return out
}

// escapePath turns a decoded path back into a request target path.
func escapePath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}

// redirectLocation builds the Location of a Gateway API redirect: the
// request's scheme, host, path and query unless the filter replaces them.
// Without a port in the filter, the port is the new scheme's well-known
// one, or without a new scheme the listener's; well-known ports are left
// out.
func redirectLocation(r *Redirect, scheme, host string, listenerPort uint16, prefix, path, rawQuery string) string {
	port := r.Port
	if r.Scheme != "" {
		scheme = r.Scheme
	}
	if port == 0 && r.Scheme == "" {
		port = int(listenerPort)
	}
	h := stripPort(host)
	if r.Hostname != "" {
		h = r.Hostname
	}
	if r.Path != nil {
		path = modifyPath(r.Path, prefix, path)
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(h)
	if port != 0 && !(scheme == "http" && port == 80 || scheme == "https" && port == 443) {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(port))
	}
	b.WriteString(escapePath(path))
	if rawQuery != "" {
		b.WriteByte('?')
		b.WriteString(rawQuery)
	}
	return b.String()
}

func unescapeQuery(s string) string {
	if v, err := url.QueryUnescape(s); err == nil {
		return v
	}
	return s
}

// mergeEdits returns one edit doing what a then b do. Every edit works as
// remove, then set, then add, so b's removes and sets also cancel what a
// sets and adds for those names.
func mergeEdits(a, b *HeaderEdit) *HeaderEdit {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	out := &HeaderEdit{}
	out.Remove = append(slices.Clone(a.Remove), b.Remove...)
	for _, f := range a.Set {
		if !b.drops(f.Name) {
			out.Set = append(out.Set, f)
		}
	}
	out.Set = append(out.Set, b.Set...)
	for _, f := range a.Add {
		if !b.drops(f.Name) {
			out.Add = append(out.Add, f)
		}
	}
	out.Add = append(out.Add, b.Add...)
	return out
}
