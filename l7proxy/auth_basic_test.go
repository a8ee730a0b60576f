package l7proxy

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// takeBcryptSlots holds every bcrypt slot until the returned function is
// called.
func takeBcryptSlots(t *testing.T) (release func()) {
	t.Helper()
	for range cap(bcryptSlots) {
		bcryptSlots <- struct{}{}
	}
	released := false
	release = func() {
		if !released {
			released = true
			for range cap(bcryptSlots) {
				<-bcryptSlots
			}
		}
	}
	t.Cleanup(release)
	return release
}

func TestAcquireBcrypt(t *testing.T) {
	tests := []struct {
		name    string
		busy    bool          // every slot taken
		freeIn  time.Duration // when busy: the slots free after this (0: never)
		wait    time.Duration
		gone    bool
		want    error
		atLeast time.Duration
		atMost  time.Duration
	}{
		// "At once" is well under the wait: a loaded machine may still
		// take some milliseconds to run the test goroutine again.
		{name: "free slot", wait: 5 * time.Second, want: nil, atMost: time.Second},
		{name: "free slot, client gone: taken at once", wait: 5 * time.Second, gone: true, want: nil, atMost: time.Second},
		{name: "busy past the wait", busy: true, wait: 200 * time.Millisecond, want: errBcryptBusy,
			atLeast: 200 * time.Millisecond, atMost: time.Second},
		{name: "busy, client gone: abandoned", busy: true, wait: time.Minute, gone: true, want: errClientLeft,
			atMost: time.Second},
		{name: "busy, freed within the wait", busy: true, freeIn: 100 * time.Millisecond, wait: 5 * time.Second, want: nil,
			atLeast: 100 * time.Millisecond, atMost: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Measured from before a release is scheduled: the wait
			// cannot end before it.
			start := time.Now()
			if tt.busy {
				release := takeBcryptSlots(t)
				if tt.freeIn > 0 {
					timer := time.AfterFunc(tt.freeIn, release)
					t.Cleanup(func() { timer.Stop() })
				}
			}
			err := acquireBcrypt(tt.wait, func() bool { return tt.gone })
			took := time.Since(start)
			if err == nil {
				releaseBcrypt()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			checkTook(t, took, tt.atLeast, tt.atMost)
		})
	}
}

func checkTook(t *testing.T, took, atLeast, atMost time.Duration) {
	t.Helper()
	if took < atLeast || took > atMost {
		t.Errorf("took %v, want between %v and %v", took, atLeast, atMost)
	}
}

// TestBasicAuthBcryptBusy checks that a basic auth request waiting for a
// bcrypt slot gets 503 once Options.PasswordCheckWait is over (not 401:
// the password was not checked), and is abandoned when its client goes
// away, through both client sides; each counted as basic_auth_busy.
func TestBasicAuthBcryptBusy(t *testing.T) {
	b := startBackend(t, "a", nil)
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// A user per client side: a password checked once is remembered,
	// and would not wait for a slot again.
	ba, err := NewBasicAuth("r", map[string]string{"h1": string(hash), "h2": string(hash)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(ingress string) Config {
		return Config{
			Routes:    []Route{{Host: "a.example", Path: "/", Upstream: "ns/a:80", Ingress: ingress, Options: RouteOptions{Access: &Access{BasicAuth: ba}}}},
			Upstreams: []Upstream{{Name: "ns/a:80", Endpoints: ep(b)}},
		}
	}
	short := startProxy(t, Options{PasswordCheckWait: 200 * time.Millisecond}, cfg("ns/short"))
	long := startProxy(t, Options{PasswordCheckWait: time.Minute}, cfg("ns/long"))
	request := func(ctx context.Context, p *testProxy, proto string) (*http.Response, error) {
		c, url := httpClient(), "http://"+p.httpAddr+"/"
		if proto == "h2" {
			c, url = h2Client(), "https://"+p.httpsAddr+"/"
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Host = "a.example"
		req.SetBasicAuth(proto, "secret")
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	tests := []struct {
		proto string
	}{{"h1"}, {"h2"}}
	for i, tt := range tests {
		t.Run(tt.proto, func(t *testing.T) {
			release := takeBcryptSlots(t)
			resp, err := request(context.Background(), short, tt.proto)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("busy: status %d, want 503", resp.StatusCode)
			}
			if got := deniedCount(short.Proxy, "ns/short", denyBasicAuthBusy); got != float64(i+1) {
				t.Errorf("basic_auth_busy denials %v, want %d", got, i+1)
			}

			// A client that leaves is not waited for: the wait ends long
			// before its minute.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			resp, err = request(ctx, long, tt.proto)
			cancel()
			if err == nil {
				t.Fatalf("answered %d while every slot is taken", resp.StatusCode)
			}
			waitFor(t, "the abandoned wait", func() bool {
				return deniedCount(long.Proxy, "ns/long", denyBasicAuthBusy) == float64(i+1)
			})

			release()
			if resp, err := request(context.Background(), short, tt.proto); err != nil || resp.StatusCode != 200 {
				t.Errorf("slots free again: %v %v", resp, err)
			}
		})
	}
}
