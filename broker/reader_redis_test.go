package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// TestNewChannelDoesNotWaitForBlockedRead: a hub whose readers are all
// blocked in XREAD on other channels starts following a newly subscribed
// channel at once, not when a blocked read times out. The block interval
// is an hour, so no clock is read: a new channel that waited for a blocked
// read would get nothing within waitFor's deadline, however loaded the
// machine.
func TestNewChannelDoesNotWaitForBlockedRead(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	log := backlog.NewRedis(srv.Client(), backlog.RedisConfig{BlockInterval: time.Hour})
	h := broker.New(log, broker.Config{Readers: 2})
	t.Cleanup(func() { h.Close(); log.Close() })

	for _, ch := range []string{"busy1", "busy2", "fresh"} {
		create(t, h, ch, 10)
	}
	subscribe(t, h, "busy1", broker.From{}, newRecorder())
	subscribe(t, h, "busy2", broker.From{}, newRecorder())
	// Each reader follows one busy channel: both are blocked in XREAD.
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := rdb.ClientList(t.Context()).Result()
		if err == nil && blockedXreads(list) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the readers never both blocked in XREAD: %v\n%s", err, list)
		}
		time.Sleep(10 * time.Millisecond)
	}

	fresh := newRecorder()
	subscribe(t, h, "fresh", broker.From{}, fresh)
	ids := publish(t, h, "fresh", 1)
	checkSequence(t, fresh.waitFor(t, 1), ids)
}

// blockedXreads counts the clients of CLIENT LIST blocked in XREAD.
func blockedXreads(list string) int {
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "cmd=xread") && strings.Contains(line, " flags=b ") {
			n++
		}
	}
	return n
}
