package l7proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// startGRPCBackend serves the gRPC health service (unary Check, server
// streaming Watch) with grpc-go, in cleartext HTTP/2.
func startGRPCBackend(t *testing.T) (netip.AddrPort, *health.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return netip.MustParseAddrPort(l.Addr().String()), hs
}

// TestGRPC runs a real grpc-go client against a grpc-go server through
// the proxy, over TLS (ALPN h2) and over h2c with prior knowledge: unary
// and server-streaming calls, a deadline, and the proxy's own errors as
// grpc-status.
func TestGRPC(t *testing.T) {
	addr, hs := startGRPCBackend(t)
	cfg := Config{
		Upstreams: []Upstream{
			{Name: "grpc", Protocol: ProtocolH2C, Endpoints: []Endpoint{{Addr: addr}}},
			{Name: "down", Protocol: ProtocolH2C},
		},
		Routes: []Route{
			{Host: "grpc.example", Path: "/", Upstream: "grpc"},
			{Host: "down.example", Path: "/", Upstream: "down"},
		},
		Certificates: []Certificate{{Cert: makeCert(t, "grpc", "grpc.example", "down.example", "none.example")}},
	}
	p := startProxy(t, Options{}, cfg)
	for _, side := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
	}{
		{"tls", p.httpsAddr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})},
		{"h2c", p.httpAddr, insecure.NewCredentials()},
	} {
		t.Run(side.name, func(t *testing.T) {
			dial := func(authority string) healthpb.HealthClient {
				conn, err := grpc.NewClient(side.addr, grpc.WithTransportCredentials(side.creds), grpc.WithAuthority(authority))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
				return healthpb.NewHealthClient(conn)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := dial("grpc.example")

			// Unary.
			res, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "echo"})
			if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v %v", res, err)
			}
			// The backend's own status comes through as it is.
			if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "nothing"}); status.Code(err) != codes.NotFound {
				t.Errorf("Check of an unknown service: %v, want the backend's NotFound", err)
			}

			// Server streaming: the first status, then a change.
			stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "echo"})
			if err != nil {
				t.Fatal(err)
			}
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch first: %v %v", m, err)
			}
			hs.SetServingStatus("echo", healthpb.HealthCheckResponse_NOT_SERVING)
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("Watch update: %v %v", m, err)
			}
			hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)

			// A deadline ends a stream that would go on forever.
			short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
			defer stop()
			watch, err := c.Watch(short, &healthpb.HealthCheckRequest{Service: "echo"})
			if err == nil {
				for err == nil {
					_, err = watch.Recv()
				}
			}
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("Watch past its deadline: %v, want DeadlineExceeded", err)
			}

			// The proxy's own answers, as gRPC statuses.
			// (grpc-go would make a status of a plain HTTP error too,
			// with another message: the message shows grpc-status came.)
			for _, tc := range []struct {
				authority string
				code      codes.Code
				message   string
			}{
				{"down.example", codes.Unavailable, "Service Unavailable"}, // no endpoint: 503
				{"none.example", codes.Unimplemented, "Not Found"},         // no route: 404
			} {
				_, err := dial(tc.authority).Check(ctx, &healthpb.HealthCheckRequest{Service: "echo"})
				if st := status.Convert(err); st.Code() != tc.code || st.Message() != tc.message {
					t.Errorf("%s: %v, want %s %q", tc.authority, err, tc.code, tc.message)
				}
			}
		})
	}
}
