package main

import (
	"context"
	"io"
	"testing"
	"time"
)

func TestCancelOnEOF(t *testing.T) {
	r, w := io.Pipe()
	ctx, cancel := cancelOnEOF(context.Background(), r)
	defer cancel()

	// Data on stdin is not an end.
	if _, err := w.Write([]byte("keep going\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
		t.Fatal("context ended while standard input was still open")
	default:
	}

	w.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context still running 5s after standard input ended")
	}
}
