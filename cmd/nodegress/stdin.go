package main

import (
	"context"
	"io"
)

// cancelOnEOF returns a context that ends when r ends (EOF or an error).
// A command run through the pods/exec API gets no signal when its client
// goes away, only its standard input closed: without this a trace would
// keep the agent's tracing switched on with nobody reading it.
func cancelOnEOF(ctx context.Context, r io.Reader) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, r)
		cancel()
	}()
	return ctx, cancel
}
