package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrorStatus(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	refused := &connectError{err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"refused", live, refused, http.StatusBadGateway},
		{"reset", live, fmt.Errorf("read: %w", syscall.ECONNRESET), http.StatusBadGateway},
		{"connect timeout", live, &connectError{err: &net.OpError{Op: "dial", Err: timeoutErr{}}}, http.StatusGatewayTimeout},
		{"header timeout", live, timeoutErr{}, http.StatusGatewayTimeout},
		{"deadline", live, fmt.Errorf("x: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{"body too large", live, fmt.Errorf("write: %w", &http.MaxBytesError{Limit: 1}), http.StatusRequestEntityTooLarge},
		{"client gone", gone, context.Canceled, StatusClientClosed},
		{"client gone wins over upstream error", gone, refused, StatusClientClosed},
		{"other", live, errors.New("malformed HTTP response"), http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorStatus(tt.ctx, tt.err); got != tt.want {
				t.Errorf("errorStatus = %d, want %d", got, tt.want)
			}
		})
	}
}
