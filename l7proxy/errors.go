package l7proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// StatusClientClosed is logged (never sent) when the client went away
// before the response was complete, following the nginx convention.
const StatusClientClosed = 499

// errorStatus maps a forwarding error to the status the client gets. It is
// the single place deciding this: 499 when the client is gone (nothing is
// written), 413 for an oversized body, 504 for an upstream timeout, 502
// for everything else (refused connection, reset, malformed response).
func errorStatus(ctx context.Context, err error) int {
	// The inbound request's context carries no deadline, so when it is
	// done the client has disconnected (or the server is shutting down).
	if ctx.Err() != nil {
		return StatusClientClosed
	}
	var he *h1Error
	if errors.As(err, &he) {
		return he.status
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// failStatus decides the status of a failed forward: err is the failure,
// bodyErr the client's body failure, if any, which takes precedence
// unless the client is gone. It returns the error to record.
func failStatus(ctx context.Context, err, bodyErr error) (int, error) {
	code := errorStatus(ctx, err)
	if bodyErr != nil && code != StatusClientClosed {
		// The client's body failed, not the upstream.
		err = bodyErr
		code = errorStatus(ctx, bodyErr)
		if code != http.StatusRequestEntityTooLarge && code != StatusClientClosed {
			code = http.StatusBadRequest
		}
	}
	return code, err
}

// writeError sends a short plain-text error response. Bodies are static
// strings: nothing from the request is reflected.
func writeError(w http.ResponseWriter, r *http.Request, code int) {
	h := w.Header()
	if isGRPC(r) {
		// A gRPC client reads the outcome from grpc-status: a
		// Trailers-Only response (HTTP 200, the status in the headers).
		h["Content-Type"] = grpcContentType
		h["Grpc-Status"] = []string{strconv.Itoa(grpcStatus(code))}
		h["Grpc-Message"] = []string{strings.ReplaceAll(http.StatusText(code), " ", "%20")}
		w.WriteHeader(http.StatusOK)
		return
	}
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	if code == http.StatusRequestEntityTooLarge || code == http.StatusBadRequest {
		// The rest of the request body may still be on the wire.
		h["Connection"] = connClose
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(errorBody(code))
	}
}

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	nosniff   = []string{"nosniff"}
	connClose = []string{"close"}
)

var errorBodies = func() map[int][]byte {
	m := make(map[int][]byte)
	for _, c := range []int{400, 403, 404, 405, 413, 500, 502, 503, 504} {
		m[c] = []byte(http.StatusText(c) + "\n")
	}
	return m
}()

func errorBody(code int) []byte {
	if b, ok := errorBodies[code]; ok {
		return b
	}
	return []byte(http.StatusText(code) + "\n")
}

var grpcContentType = []string{"application/grpc"}

// isGRPC reports a gRPC request: HTTP/2 with a gRPC content type.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcStatus is the gRPC status code of a proxy's own HTTP answer, as the
// gRPC specification maps HTTP statuses (doc/http-grpc-status-mapping),
// and RESOURCE_EXHAUSTED for a body over the limit.
func grpcStatus(code int) int {
	switch code {
	case http.StatusBadRequest, http.StatusInternalServerError:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return 12 // UNIMPLEMENTED
	case http.StatusRequestEntityTooLarge:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}
