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
	"google.golang.org/grpc/metadata"
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

// TestGRPCMirror mirrors gRPC calls (a GRPCRoute's RequestMirror) from a
// grpc-go client, over TLS and h2c, to a second grpc-go server over h2c:
// the mirror gets the whole call (method, message, metadata) and the
// client the main backend's answer, trailers and status included, also
// when the mirror is down.
func TestGRPCMirror(t *testing.T) {
	mainAddr, _ := startGRPCBackend(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type call struct{ method, service, tag string }
	calls := make(chan call, 16)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c := call{method: info.FullMethod}
		if r, ok := req.(*healthpb.HealthCheckRequest); ok {
			c.service = r.Service
		}
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-tag")) > 0 {
			c.tag = md.Get("x-tag")[0]
		}
		calls <- c
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	mirrorAddr := netip.MustParseAddrPort(l.Addr().String())

	ups := []Upstream{
		{Name: "main", Protocol: ProtocolH2C, Endpoints: []Endpoint{{Addr: mainAddr}}},
		{Name: "mirror", Protocol: ProtocolH2C, Endpoints: []Endpoint{{Addr: mirrorAddr}}},
		{Name: "dead", Protocol: ProtocolH2C, Endpoints: []Endpoint{{Addr: deadAddr(t)}}},
	}
	rule := func(method, mirror string) HTTPRouteRule {
		return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathExact, Path: "/grpc.health.v1.Health/" + method}},
			Filters:  Filters{Mirrors: []Mirror{{Upstream: mirror}}},
			Backends: []WeightedBackend{{Upstream: "main", Weight: 1}}}
	}
	for _, side := range []struct {
		pc    pipelineCase
		creds credentials.TransportCredentials
	}{
		{pipelineCase{"tls", ProtocolH2C, true, false}, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})},
		{pipelineCase{"h2c", ProtocolH2C, false, true}, insecure.NewCredentials()},
	} {
		t.Run(side.pc.name, func(t *testing.T) {
			p := gwTestProxy(t, side.pc, Options{}, ups, rule("Check", "mirror"), rule("List", "dead"))
			addr := p.httpAddr
			if side.pc.h2 {
				addr = p.httpsAddr
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(side.creds), grpc.WithAuthority("gw.example"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := healthpb.NewHealthClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-tag", side.pc.name)

			// The main backend answers (its NotFound status comes back
			// from the trailers); the mirror gets the same call.
			if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
				t.Fatalf("Check: %v, want the main backend's NotFound", err)
			}
			select {
			case got := <-calls:
				if want := (call{"/grpc.health.v1.Health/Check", "unknown", side.pc.name}); got != want {
					t.Errorf("mirror got %+v, want %+v", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no mirrored call")
			}
			// A dead mirror changes nothing for the caller.
			if _, err := c.List(ctx, &healthpb.HealthListRequest{}); err != nil {
				t.Errorf("List with a dead mirror: %v", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for mirrorCount(p, "dead", mirrorFailed) != 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := mirrorCount(p, "dead", mirrorFailed); n != 1 {
				t.Errorf("dead mirror failures %v, want 1", n)
			}
		})
	}
}
