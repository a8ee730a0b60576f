package main

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// execer runs a command in an agent's container and streams its standard
// streams; the pods/exec API in a cluster, a fake in tests.
type execer interface {
	exec(ctx context.Context, a agent, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// podExec runs commands through the pods/exec subresource, over WebSocket
// and, where a proxy or an older API server refuses that, SPDY, as kubectl
// does.
type podExec struct {
	config *rest.Config
	client kubernetes.Interface
}

func (e podExec) exec(ctx context.Context, a agent, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	req := e.client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(a.Namespace).Name(a.Pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: a.Container,
			Command:   cmd,
			Stdin:     stdin != nil,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(e.config, "GET", req.URL().String())
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", a.Namespace, a.Pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.config, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", a.Namespace, a.Pod, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", a.Namespace, a.Pod, err)
	}
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr}); err != nil {
		return fmt.Errorf("exec in %s/%s: %w", a.Namespace, a.Pod, err)
	}
	return nil
}
