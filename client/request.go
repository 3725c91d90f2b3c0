package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// request is a request awaiting its answer.
type request struct {
	channel  string
	id       string    // set by the ack
	deadline time.Time // zero: the gateway's default timeout
	res      chan result
	// abandoned is set (under the client's mu) when the caller gave up.
	abandoned bool
}

// Request asks the app serving channel (docs/protocol.md, "Requests and
// replies") and returns its reply's data. ctx's deadline, if any, is the
// request's timeout_ms (within the gateway's TSLM_MAX_REQUEST_TIMEOUT);
// without one the gateway's TSLM_REQUEST_TIMEOUT applies. An app's refusal
// is a *Refusal; no reply in time is a *Error matching ErrTimeout. A
// request acknowledged before its connection dropped is resumed on the
// next one, with its session; one not yet acknowledged fails with a
// *DisconnectError (it may or may not have been queued).
func (c *Client) Request(ctx context.Context, channel string, data any) (json.RawMessage, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("tslm: request data: %w", err)
	}
	r := &request{channel: channel, res: make(chan result, 1)}
	var timeoutMS int64
	if dl, ok := ctx.Deadline(); ok {
		timeoutMS = time.Until(dl).Milliseconds()
		if timeoutMS < 1 {
			return nil, context.DeadlineExceeded
		}
		r.deadline = dl
	}
	var cn *conn
	var ref string
	for {
		cn, err = c.current(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.cur != cn {
			c.mu.Unlock()
			continue
		}
		ref = c.nextRef("req")
		cn.calls[ref] = &call{kind: kindRequest, req: r}
		c.mu.Unlock()
		b, _ := json.Marshal(requestFrame{Type: "request", Ref: ref, Channel: channel, Data: raw, TimeoutMS: timeoutMS})
		if err := cn.send(ctx, b); err != nil {
			c.forget(cn, ref)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // never written
		}
		break
	}
	select {
	case res := <-r.res:
		return res.data, res.err
	case <-ctx.Done():
		c.mu.Lock()
		r.abandoned = true
		delete(c.requests, ref)
		delete(cn.calls, ref)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}
