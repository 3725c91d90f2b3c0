package backlog

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"
)

// reply is an error reply as go-redis hands it out: a redis.Error.
type reply string

func (r reply) Error() string { return string(r) }
func (reply) RedisError()     {}

var _ redis.Error = reply("")

// TestWrapClassifiesRedisErrors: replies that mean "the server cannot
// serve now" and failures to get an answer at all are ErrUnavailable (the
// client retries); other replies describe a bad request or a bug and stay
// plain; a cancellation is the caller's.
func TestWrapClassifiesRedisErrors(t *testing.T) {
	r := NewRedis(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), RedisConfig{})
	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	tests := []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
	}{
		{"loading", live, reply("LOADING Redis is loading the dataset in memory"), true},
		{"readonly", live, reply("READONLY You can't write against a read only replica."), true},
		{"masterdown", live, reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), true},
		{"clusterdown", live, reply("CLUSTERDOWN The cluster is down"), true},
		{"tryagain", live, reply("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{"busy", live, reply("BUSY Redis is busy running a script."), true},
		{"noreplicas", live, reply("NOREPLICAS Not enough good replicas to write."), true},
		{"moved", live, reply("MOVED 3999 127.0.0.1:6381"), true},
		{"ask", live, reply("ASK 3999 127.0.0.1:6381"), true},
		{"oom", live, reply("OOM command not allowed when used memory > 'maxmemory'."), true},
		{"max clients", live, reply("ERR max number of clients reached"), true},
		{"network", live, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"deadline", live, context.DeadlineExceeded, true},
		{"pool timeout", live, redis.ErrPoolTimeout, true},
		{"wrongtype", live, reply("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"unknown command", live, reply("ERR unknown command 'XINFO'"), false},
		{"script error", live, reply("ERR user_script:1: Script attempted to access nonexistent global variable"), false},
		{"busygroup", live, reply("BUSYGROUP Consumer Group name already exists"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.wrap(tt.ctx, tt.err)
			if errors.Is(got, ErrUnavailable) != tt.unavailable {
				t.Errorf("wrap(%v) = %v, unavailable %v, want %v", tt.err, got, !tt.unavailable, tt.unavailable)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("wrap(%v) = %v lost the cause", tt.err, got)
			}
		})
	}
	if got := r.wrap(canceled, errors.New("i/o timeout")); got != context.Canceled {
		t.Errorf("wrap with the caller gone = %v, want context.Canceled", got)
	}
	if got := r.wrap(live, redis.Nil); got != redis.Nil {
		t.Errorf("wrap(redis.Nil) = %v, want it unchanged", got)
	}
}
