package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/redistest"
)

// backendHeader names, on the balancer's answers, the replica that served
// the request, so that tests can tell where a client landed.
const backendHeader = "X-Test-Backend"

// balancer is the load balancer of docker-compose.yml, in the test: it
// proxies every request (so every WebSocket connection, upgrade included)
// to the next replica in turn, with no stickiness. Like nginx's
// proxy_next_upstream error, a request whose replica refuses the
// connection goes to the next one.
type balancer struct {
	backends  []string // host:port
	next      atomic.Uint64
	transport *http.Transport
	url       string // ws://…/v1/ws
}

func startBalancer(t *testing.T, backends []string) *balancer {
	t.Helper()
	b := &balancer{backends: backends, transport: &http.Transport{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "backend" // RoundTrip picks it
		},
		Transport: b,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(func() {
		srv.Close()
		b.transport.CloseIdleConnections()
	})
	b.url = "ws" + srv.URL[len("http"):] + "/v1/ws"
	return b
}

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	first := b.next.Add(1) - 1
	var err error
	for i := range b.backends {
		host := b.backends[(first+uint64(i))%uint64(len(b.backends))]
		out := req.Clone(req.Context())
		out.URL.Host = host
		var resp *http.Response
		if resp, err = b.transport.RoundTrip(out); err == nil {
			resp.Header.Set(backendHeader, host)
			return resp, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
	}
	return nil, err
}

// dial connects a v1 client through the balancer and names the replica it
// landed on.
func (b *balancer) dial(ctx context.Context) (*websocket.Conn, string, error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(ctx, b.url, nil)
	if err != nil {
		return nil, "", err
	}
	return conn, resp.Header.Get(backendHeader), nil
}

// TestTopologyFailover runs the topology of docker-compose.yml as
// processes: one redis-server with AOF, three replicas of the real binary
// on it, and a round-robin balancer without stickiness in front of their
// public listeners. Clients connect through the balancer; one replica is
// stopped with SIGTERM mid-stream: its clients are closed with 1001,
// reconnect through the balancer, land on another replica, resume with
// since and miss nothing.
func TestTopologyFailover(t *testing.T) {
	const total, clients, victim = 2000, 6, 2
	srv := redistest.Start(t, redistest.Options{AOF: true})
	var procs []*process
	for range 3 {
		procs = append(procs, startBinary(t, map[string]string{"TSLM_REDIS_URL": srv.URL(), "TSLM_SHUTDOWN_GRACE": "5s"}))
	}
	var public, apis []string
	for _, p := range procs {
		public = append(public, p.addr(t, "public"))
		apis = append(apis, "http://"+p.addr(t, "internal"))
	}
	lb := startBalancer(t, public)
	(&replica{apiURL: apis[0]}).create(t, "failover", map[string]any{"max_len": 100_000})
	rdb := srv.Client()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	resumers := make([]*resumer, clients)
	var wg sync.WaitGroup
	for i := range resumers {
		resumers[i] = &resumer{channel: "failover", dial: lb.dial}
		wg.Go(func() {
			if err := resumers[i].run(ctx, total); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		})
	}

	// The publisher writes directly and through the replicas that stay.
	// The victim is stopped while messages flow: once every client has a
	// quarter of them; the publisher waits at three quarters, so that the
	// stop always lands mid-stream.
	stopped := make(chan struct{})
	wg.Go(func() {
		for i := range total {
			if i == 3*total/4 {
				select {
				case <-stopped:
				case <-ctx.Done():
					return
				}
			}
			var err error
			if i%2 == 0 {
				_, err = xadd(ctx, rdb, "failover", fmt.Sprint(i))
			} else {
				_, err = httpPublish(ctx, apis[(i/2)%2], "failover", i)
			}
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				cancel()
				return
			}
		}
	})

	eventually(t, 30*time.Second, "the clients never received a quarter of the messages", func() bool {
		for _, r := range resumers {
			if r.received.Load() < total/4 {
				return false
			}
		}
		return true
	})
	if err := procs[victim].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(stopped)
	wg.Wait()
	if err := procs[victim].wait(t, 15*time.Second); err != nil {
		t.Errorf("replica exit after SIGTERM: %v, want status 0; stderr:\n%s", err, procs[victim].output())
	}
	if t.Failed() {
		return
	}

	want := streamIDs(t, rdb, "failover")
	if len(want) != total {
		t.Fatalf("the stream holds %d messages, want %d", len(want), total)
	}
	moved := 0
	for i, r := range resumers {
		sameIDs(t, fmt.Sprintf("client %d", i), r.ids, want)
		first, last := r.sessions[0], r.sessions[len(r.sessions)-1]
		if first.backend != public[victim] {
			if len(r.sessions) != 1 {
				t.Errorf("client %d on a replica that stayed reconnected: %+v", i, r.sessions)
			}
			continue
		}
		moved++
		t.Logf("client %d: %+v", i, r.sessions)
		for _, s := range r.sessions {
			if s.backend == public[victim] && s.end != "close 1001" {
				t.Errorf("client %d: a session on the stopped replica ended with %q, want close 1001: %+v", i, s.end, r.sessions)
			}
		}
		if last.backend == public[victim] || last.end != "done" {
			t.Errorf("client %d did not finish on another replica: %+v", i, r.sessions)
		}
	}
	if moved == 0 {
		t.Fatalf("no client was on the stopped replica")
	}
	t.Logf("%d of %d clients moved off the stopped replica", moved, clients)
}
