package backlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// reader is a connection dedicated to blocking XREADs, with the CLIENT ID
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

// putReader keeps a healthy reader for the next Read, or closes it.
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

// Read runs one XREAD BLOCK on a dedicated connection (see blocking). A
// reader that failed while idle, for
// instance because Redis restarted, is replaced once before Read gives up.
// The XREAD is only the wake-up for streams whose entries do not prove
// continuity by themselves: those are read again, atomically with their
// proof, in one more round trip (see batches).
//
// Read checks that a cursor's channel still exists only when its stream
// has news: Delete adds a tombstone entry for that purpose, and the proving
// read reports the channel Deleted once its meta is gone. A cursor on a
// channel that never existed sees no entry unless a publisher breaks the
// contract by XADDing to a stream without meta; it is then reported
// Deleted too.
func (r *Redis) Read(ctx context.Context, cursors []Cursor, limit int) ([]Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	if r.conns == nil {
		return nil, errReadUnsupported
	}
	if len(cursors) == 0 {
		return nil, r.idle(ctx)
	}
	for attempt := 0; ; attempt++ {
		res, retry, err := r.xread(ctx, cursors, limit)
		if retry && attempt == 0 {
			continue
		}
		if err != nil || len(res) == 0 {
			return nil, err
		}
		return r.batches(ctx, cursors, res, limit)
	}
}

// idle waits out a block interval for a Read with nothing to follow.
func (r *Redis) idle(ctx context.Context) error {
	t := time.NewTimer(r.cfg.BlockInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// xread runs one blocking XREAD. retry is true when a reused reader failed
// with a connection error, so a fresh one may succeed.
func (r *Redis) xread(ctx context.Context, cursors []Cursor, limit int) (res []redis.XStream, retry bool, err error) {
	block := r.cfg.BlockInterval
	if dl, ok := ctx.Deadline(); ok {
		block = min(block, time.Until(dl))
	}
	block = max(block.Truncate(time.Millisecond), time.Millisecond) // never BLOCK 0
	streams := make([]string, 2*len(cursors))
	for i, c := range cursors {
		streams[i] = r.streamKey(c.Channel)
		streams[len(cursors)+i] = c.After.String()
	}
	args := &redis.XReadArgs{Streams: streams, Block: block}
	if limit > 0 {
		args.Count = int64(limit)
	}
	retry, err = r.blocking(ctx, func(ctx context.Context, conn *redis.Conn) (err error) {
		res, err = conn.XRead(ctx, args).Result()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, retry, err
	}
	return res, false, nil
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

// batches converts XREAD's answer and marks gaps. XREAD is the wake-up;
// its entries are kept only where they prove continuity by themselves:
// the first is the cursor's immediate successor (same millisecond, next
// sequence), so nothing can lie between them.
//
// For every other stream with entries, one readScript (pipelined across
// streams, one round trip) reads again after the cursor and decides in the
// same atomic step whether that read is continuous: the cursor entry is
// still held, or the cursor is 0-0 and nothing was ever removed. Deciding
// on XREAD's entries instead would race with trims landing between the two
// round trips. Without that proof, or a first entry that is the cursor's
// successor, the batch is a gap: once the cursor entry is gone, nothing in
// the stream tells what a publisher's trim took after it.
func (r *Redis) batches(ctx context.Context, cursors []Cursor, res []redis.XStream, limit int) ([]Batch, error) {
	after := make(map[string]ID, len(cursors))
	for _, c := range cursors {
		after[c.Channel] = c.After
	}
	out := make([]Batch, 0, len(res))
	var probe []int // indexes into out
	for _, s := range res {
		if len(s.Messages) == 0 {
			continue
		}
		b := Batch{Channel: r.channelOf(s.Stream)}
		cur := after[b.Channel]
		if msgs := messagesOf(s.Messages); len(msgs) > 0 && !cur.IsZero() && msgs[0].ID == cur.Next() && !anyTombstone(s.Messages) {
			b.Messages = msgs
		} else {
			probe = append(probe, len(out))
		}
		out = append(out, b)
	}
	if len(probe) == 0 {
		return out, nil
	}
	if r.afterXRead != nil {
		r.afterXRead()
	}
	calls := make([]scriptCall, len(probe))
	for i, j := range probe {
		ch := out[j].Channel
		calls[i] = scriptCall{keys: []string{r.streamKey(ch), r.metaKey(ch)}, args: []any{after[ch].String(), max(limit, 0)}}
	}
	cmds := evalPipelined(ctx, r.client, readScript, calls)
	for i, j := range probe {
		vals, err := cmds[i].Slice()
		if err != nil {
			return nil, r.wrap(ctx, err)
		}
		proved, deleted, msgs, err := parseRead(vals)
		if err != nil {
			return nil, err
		}
		if deleted {
			out[j].Deleted = true
			continue
		}
		cur := after[out[j].Channel]
		out[j].Messages = msgs
		out[j].Gap = !proved && len(msgs) > 0 && (cur.IsZero() || msgs[0].ID != cur.Next())
	}
	// A publisher's trim between the two round trips may have left a
	// stream with nothing after its cursor: its loss is reported with the
	// next entry, as a batch always holds a message.
	kept := out[:0]
	for _, b := range out {
		if len(b.Messages) > 0 || b.Deleted {
			kept = append(kept, b)
		}
	}
	if len(kept) == 0 {
		return nil, nil
	}
	return kept, nil
}

// anyTombstone reports whether XREAD returned a deleted channel's
// tombstone (see deleteScript), which only the proving read can tell from
// a publisher's entry with a field of the same name.
func anyTombstone(xs []redis.XMessage) bool {
	for _, x := range xs {
		if _, ok := x.Values["deleted"]; ok {
			return true
		}
	}
	return false
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
