package backlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// reader is a connection dedicated to blocking commands (a Claim's
// XREADGROUP BLOCK), with the CLIENT ID
// Redis knows it by, so that another connection can CLIENT UNBLOCK it. A
// broken *redis.Conn never redials (its pool is sticky), so the ID stays
// true for the reader's life.
type reader struct {
	conn *redis.Conn
	id   int64
}

var errReadUnsupported = errors.New("backlog: Read needs a client with dedicated connections (standalone or Sentinel *redis.Client)")

// getReader returns an idle reader or opens one; reused is true for the
// former, which may have died while idle.
func (r *Redis) getReader(ctx context.Context) (rd *reader, reused bool, err error) {
	select {
	case rd := <-r.free:
		return rd, true, nil
	default:
	}
	conn := r.conns.Conn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		conn.Close()
		return nil, false, r.wrap(ctx, err)
	}
	return &reader{conn: conn, id: id}, false, nil
}

// putReader keeps a healthy reader for the next blocking command, or
// closes it.
func (r *Redis) putReader(rd *reader, healthy bool) {
	r.mu.Lock()
	delete(r.active, rd)
	closed := r.closed
	r.mu.Unlock()
	if healthy && !closed {
		select {
		case r.free <- rd:
			return
		default:
		}
	}
	rd.conn.Close()
}

// blocking runs cmd, a blocking command, on a dedicated reader connection.
// go-redis cannot abort a blocked read, so cancellation sends CLIENT
// UNBLOCK from the shared pool, retrying until cmd returns (the UNBLOCK may
// otherwise arrive before the command blocks). It returns ctx.Err() once
// ctx is done, ErrClosed once r is closed, redis.Nil as is (a timeout or
// an UNBLOCK), and other errors wrapped; retry is true when a reused
// reader failed with a connection error, so a fresh one may succeed.
func (r *Redis) blocking(ctx context.Context, cmd func(ctx context.Context, conn *redis.Conn) error) (retry bool, err error) {
	rd, reused, err := r.getReader(ctx)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.putReader(rd, false)
		return false, ErrClosed
	}
	r.active[rd] = struct{}{}
	r.mu.Unlock()

	done := make(chan struct{})
	unblocked := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(unblocked)
		r.unblock(rd.id, done)
	})
	// Not ctx: the command must end by its BLOCK timeout or by UNBLOCK,
	// never by go-redis giving up half-way and poisoning the connection.
	err = cmd(context.WithoutCancel(ctx), rd.conn)
	close(done)
	if !stop() {
		<-unblocked // the UNBLOCK must not hit this reader's next command
	}
	var reply redis.Error
	healthy := err == nil || errors.Is(err, redis.Nil) || errors.As(err, &reply)
	r.putReader(rd, healthy)
	switch {
	case ctx.Err() != nil:
		return false, ctx.Err()
	case r.isClosed():
		return false, ErrClosed
	case err != nil:
		return reused && !healthy, r.wrap(ctx, err)
	}
	return false, nil
}

// unblock sends CLIENT UNBLOCK id until it lands or done closes.
func (r *Redis) unblock(id int64, done <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.BlockInterval)
	defer cancel()
	for {
		if n, err := r.client.ClientUnblock(ctx, id).Result(); err == nil && n == 1 {
			return
		}
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// parseRead reads readScript's answer: {proved, {{id, {field, value,
// ...}}, ...}}, where proved 2 means deleted. As in messagesOf, an entry
// without a data field has empty Data.
func parseRead(vals []any) (proved, deleted bool, msgs []Message, err error) {
	entries, ok := []any(nil), len(vals) == 2
	if ok {
		entries, ok = vals[1].([]any)
	}
	if !ok {
		return false, false, nil, fmt.Errorf("backlog: read script returned %v", vals)
	}
	if flag, _ := vals[0].(int64); flag == 2 {
		return false, true, nil, nil
	}
	for _, e := range entries {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			return false, false, nil, fmt.Errorf("backlog: read script returned entry %v", e)
		}
		s, _ := pair[0].(string)
		id, err := ParseID(s)
		if err != nil {
			continue // Redis only hands out canonical IDs
		}
		m := Message{ID: id}
		fields, _ := pair[1].([]any)
		for k := 0; k+1 < len(fields); k += 2 {
			if name, _ := fields[k].(string); name == "data" {
				data, _ := fields[k+1].(string)
				m.Data = []byte(data)
				break
			}
		}
		msgs = append(msgs, m)
	}
	flag, _ := vals[0].(int64)
	return flag == 1, false, msgs, nil
}
