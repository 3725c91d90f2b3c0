package backlog_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// cutProxy forwards TCP to Redis and, once armed, drops the connection that
// next receives a reply, instead of passing the reply on: the command ran,
// but its client cannot know.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.wg.Go(func() {
			io.Copy(server, client)
			server.Close()
		})
		p.wg.Go(func() {
			defer client.Close()
			defer server.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if err != nil || p.armed.CompareAndSwap(true, false) {
					return
				}
				if _, err := client.Write(buf[:n]); err != nil {
					return
				}
			}
		})
	}
}

// TestRedisAppendIsNotRetriedAfterItRan holds an append whose connection
// dies after Redis ran it to one message: go-redis retries such a command
// by itself (EOF is retryable), which stored the publish twice while its
// publisher was told it was stored once.
func TestRedisAppendIsNotRetriedAfterItRan(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := startCutProxy(t, srv.Addr())
	client := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String()})
	t.Cleanup(func() { client.Close() })
	log := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: "retry:"})
	t.Cleanup(func() { log.Close() })
	ctx := testContext(t)

	if _, err := log.Create(ctx, "c", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Append(ctx, "c", []byte(`"warm"`)); err != nil {
		t.Fatal(err)
	}
	proxy.armed.Store(true)
	_, err := log.Append(ctx, "c", []byte(`"once"`))
	if !errors.Is(err, backlog.ErrUnavailable) {
		t.Errorf("append on a cut connection: %v, want ErrUnavailable", err)
	}
	n, xerr := srv.Client().XLen(ctx, "retry:ch:{c}").Result()
	if xerr != nil {
		t.Fatal(xerr)
	}
	if n != 2 {
		t.Fatalf("stream holds %d messages after one warm-up and one cut append (append err %v), want 2: the append ran twice", n, err)
	}
}
