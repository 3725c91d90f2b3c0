package ws

import (
	"context"
	"sync"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Requests over protocol v1. A requesting connection has at most one
// broker.Session, made by its first request or resumed by a session
// command; a serving connection has one broker.Serving per channel it
// serves. The hub owns their state (inbox, pending requests, claims); the
// connection only frames commands and answers.

var (
	_ broker.ReplySink   = (*conn)(nil)
	_ broker.RequestSink = (*conn)(nil)
)

// answerGate holds a resumed session's answers back until the session's
// ack is queued: the hub may find replies in the inbox before
// ResumeSession returns, and the client must learn that the session was
// resumed before it gets answers. At most one answer per pending request
// can be held, so the hold is bounded by the pending list.
type answerGate struct {
	mu      sync.Mutex
	holding bool
	held    [][]byte
}

// request runs a request command: the answer comes later, through Answer.
func (c *conn) request(ref, channel string, cmd *command) {
	if c.session == nil {
		// No I/O until the first Request; from here on the connection has
		// a session, and a session command is too late.
		// The session belongs to whom the connection speaks for now;
		// a re-auth keeps that principal (authenticate).
		c.session = c.srv.hub.NewSession(c.who().Owner(), c)
	}
	if len(cmd.Data) == 0 {
		c.replyError(ref, badRequest("missing field \"data\""))
		return
	}
	if len(cmd.Data) > c.srv.cfg.MaxDataBytes {
		c.replyError(ref, broker.ErrTooLarge.With("data is larger than %d bytes", c.srv.cfg.MaxDataBytes))
		return
	}
	timeout, perr := cmd.requestTimeout()
	if perr != nil {
		c.replyError(ref, perr)
		return
	}
	// The hub calls acked before the request can be answered, so the ack
	// is queued ahead of the answer. It does so under the session's lock,
	// which the hub's reader takes to hand replies over: the ack must not
	// wait for room, any more than an answer. A client too slow for it is
	// closed as a slow consumer.
	acked := false
	err := c.session.Request(c.ctx, channel, cmd.Data, timeout, ref, func(id backlog.ID, token string) {
		acked = true
		c.offer(encodeAck(ackFrame{Ref: ref, Channel: channel, ID: id.String(), Session: token}))
	})
	if err != nil && !acked {
		c.replyError(ref, err)
	}
}

// resumeSession runs a session command: the connection takes over the
// session of the token and awaits the requests listed.
func (c *conn) resumeSession(ref string, cmd *command) {
	if c.session != nil {
		c.replyError(ref, badRequest("a connection has one session: send session once, before any request"))
		return
	}
	token, pending, perr := cmd.resume()
	if !c.permitSession(ref, pending) {
		return
	}
	if perr != nil {
		c.replyError(ref, perr)
		return
	}
	c.holdAnswers()
	s, err := c.srv.hub.ResumeSession(c.ctx, c.who().Owner(), token, pending, c)
	if err != nil {
		c.releaseAnswers(false)
		c.replyError(ref, err)
		return
	}
	c.session = s
	if t := s.Token(); t != "" {
		token = t
	}
	c.reply(encodeAck(ackFrame{Ref: ref, Session: token}))
	c.releaseAnswers(true)
}

func (c *conn) holdAnswers() {
	c.answers.mu.Lock()
	c.answers.holding = true
	c.answers.mu.Unlock()
}

// releaseAnswers ends the hold, sending what was held, or dropping it when
// the session was not resumed after all.
func (c *conn) releaseAnswers(send bool) {
	c.answers.mu.Lock()
	defer c.answers.mu.Unlock()
	for _, f := range c.answers.held {
		if send && !c.offer(f) {
			break
		}
	}
	c.answers.held = nil
	c.answers.holding = false
}

// Answer implements broker.ReplySink. Like Deliver, it does not wait: a
// full queue closes the connection as a slow consumer, and the client
// resumes its session, where the reply waits in the inbox.
func (c *conn) Answer(a broker.Answer) bool {
	frame := encodeAnswer(a, c.srv.cfg.MaxDataBytes)
	switch {
	case a.Timeout:
		c.srv.countError(broker.CodeTimeout)
	case a.Refusal == nil && len(a.Data) > c.srv.cfg.MaxDataBytes:
		c.srv.countError(broker.CodeTooLarge)
	}
	c.answers.mu.Lock()
	if c.answers.holding {
		c.answers.held = append(c.answers.held, frame)
		c.answers.mu.Unlock()
		return true
	}
	c.answers.mu.Unlock()
	return c.offer(frame)
}

// startServing runs a serve command.
func (c *conn) startServing(ref, channel string) {
	if _, ok := c.servings[channel]; ok {
		c.replyError(ref, badRequest("already serving %s", channel))
		return
	}
	if len(c.servings) >= c.srv.cfg.MaxSubscriptions {
		c.replyError(ref, broker.ErrLimit.With("too many served channels on this connection"))
		return
	}
	sink := &servingSink{c: c, acked: make(chan struct{})}
	sv, err := c.srv.hub.Serve(c.ctx, channel, sink)
	if err != nil {
		c.replyError(ref, err)
		return
	}
	if c.servings == nil {
		c.servings = make(map[string]*broker.Serving) // most connections serve nothing
	}
	c.servings[channel] = sv
	c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel}))
	close(sink.acked)
}

// stopServing ends serving channel, if it was served; the requests held
// and not answered go to other servers.
func (c *conn) stopServing(channel string) {
	if sv, ok := c.servings[channel]; ok {
		sv.Close()
		delete(c.servings, channel)
	}
}

// answer runs a reply command: an app answers a request it was handed.
func (c *conn) answer(ref, channel string, cmd *command) {
	id, data, refusal, perr := cmd.reply(c.srv.cfg.MaxDataBytes)
	if perr != nil {
		c.replyError(ref, perr)
		return
	}
	sv, ok := c.servings[channel]
	if !ok {
		c.replyError(ref, broker.ErrRequestGone.With("this connection does not serve %s: no request of it awaits its reply", channel))
		return
	}
	if err := sv.Reply(c.ctx, id, data, refusal); err != nil {
		c.replyError(ref, err)
		return
	}
	c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel, ID: id.String()}))
}

// Serve implements broker.RequestSink: like a replayed message, a request
// waits for room in the queue, and an app that reads nothing for
// WriteTimeout is a slow consumer.
func (c *conn) Serve(ctx context.Context, r broker.ServedRequest) error {
	return c.push(ctx, encodeServedRequest(r))
}

// servingSink holds a Serving's first requests back until the serve
// command's ack is queued, so that the app sees the ack first.
type servingSink struct {
	c     *conn
	acked chan struct{} // closed once the ack is queued
}

func (s *servingSink) Serve(ctx context.Context, r broker.ServedRequest) error {
	select {
	case <-s.acked:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.c.Serve(ctx, r)
}

// closeRequests ends the connection's session and servings; reader
// goroutine, once the connection is over. The session's inbox stays for
// the client to resume elsewhere; held requests go to other servers.
func (c *conn) closeRequests() {
	if c.session != nil {
		c.session.Close()
	}
	for _, sv := range c.servings {
		sv.Close()
	}
}
