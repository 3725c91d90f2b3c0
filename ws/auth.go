package ws

import (
	"context"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/bearer"
)

// Authenticator turns a credential (a token or an API key, as presented in
// an Authorization: Bearer header or an auth frame) into the principal it
// stands for. Its errors wrap auth.ErrUnauthenticated when the credential
// is refused; their text may be shown to the client.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (*auth.Principal, error)
}

var _ Authenticator = (*auth.Authenticator)(nil)

// Credentials, docs/protocol.md "Authentication". A connection speaks for
// at most one principal, from its upgrade's Authorization header or an
// auth frame, and every command goes through the listener's Policy.Decide
// with it. The principal is set by the reader goroutine (or before it
// starts) and read by it and by two timers: the deadline to authenticate
// on a listener that requires it, and the principal's expiry; conn.authMu
// guards the three.

// listener is what the Policy needs to know of s.
func (s *Server) listener() auth.Listener {
	return auth.Listener{Public: s.cfg.Public, Mode: s.cfg.AuthMode, Allow: s.cfg.Allow}
}

// verify checks a credential. A refusal is
// unauthorized, with the authenticator's reason; a failure that is not a
// refusal (a bug, an unreachable provider the authenticator did not
// report as such) is logged, and the client told only that the credential
// could not be checked.
func (s *Server) verify(ctx context.Context, credential string) (*auth.Principal, *broker.Error) {
	if s.cfg.Authenticator == nil {
		return nil, broker.ErrUnauthorized.With("credentials refused: this listener has no way to check them")
	}
	p, err := s.cfg.Authenticator.Authenticate(ctx, credential)
	if err != nil || p == nil {
		msg, checked := bearer.Refusal(err)
		if !checked {
			s.cfg.Logger.Warn("credentials could not be checked", "err", err)
		}
		return nil, broker.ErrUnauthorized.With("%s", msg)
	}
	return p, nil
}

// countAuth counts an authentication's outcome, by header or frame.
func (s *Server) countAuth(ok bool) {
	if ok {
		s.stats.authOK.Add(1)
	} else {
		s.stats.authRefused.Add(1)
	}
}

// who returns the connection's principal, nil for none.
func (c *conn) who() *auth.Principal {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.principal
}

// startAuth arms the connection's timer, first thing in serve: the
// principal's expiry, or, on a listener that requires credentials when the
// upgrade brought none, the deadline to present them.
func (c *conn) startAuth() {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	switch {
	case c.principal != nil:
		c.armExpiryLocked(c.principal)
	case c.srv.cfg.AuthMode == auth.ModeRequired:
		c.deadline = time.AfterFunc(c.srv.cfg.AuthTimeout, func() {
			c.authMu.Lock()
			defer c.authMu.Unlock()
			if c.principal == nil {
				c.close(CloseUnauthorized)
			}
		})
	}
}

// setPrincipal makes p the connection's principal, ends the wait for
// credentials, and re-arms the expiry for p's.
func (c *conn) setPrincipal(p *auth.Principal) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	c.principal = p
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
	c.armExpiryLocked(p)
}

// armExpiryLocked closes the connection with CloseExpired when p expires,
// unless another principal has replaced it by then; it replaces the timer
// of the previous principal. c.authMu is held.
func (c *conn) armExpiryLocked(p *auth.Principal) {
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if p.Expires.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(time.Until(p.Expires), func() {
		c.authMu.Lock()
		defer c.authMu.Unlock()
		if c.principal == p {
			c.close(CloseExpired)
		}
	})
}

// stopAuth stops the timers once the connection is over.
func (c *conn) stopAuth() {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	for _, t := range []*time.Timer{c.deadline, c.expiry} {
		if t != nil {
			t.Stop()
		}
	}
}

// authHint tells an unauthenticated client how to authenticate over its
// protocol.
func (c *conn) authHint() string {
	if c.legacy {
		return "connect with Authorization: Bearer"
	}
	return "send an auth frame, or connect with Authorization: Bearer"
}

// awaitingAuth reports whether the listener requires credentials and the
// connection has presented none yet: then it may do nothing but
// authenticate.
func (c *conn) awaitingAuth(ref string) bool {
	if c.srv.cfg.AuthMode != auth.ModeRequired || c.who() != nil {
		return false
	}
	c.replyError(ref, broker.ErrUnauthorized.With("this listener requires credentials: %s first", c.authHint()))
	return true
}

// permit decides whether the connection may perform op on channel, and
// answers a refusal itself.
func (c *conn) permit(ref string, op auth.Op, channel string) bool {
	v, why := c.srv.cfg.Policy.Decide(c.srv.listener(), c.who(), op, channel, time.Now())
	switch v {
	case auth.Allowed:
		return true
	case auth.Unauthenticated:
		c.replyError(ref, broker.ErrUnauthorized.With("%s (%s)", why, c.authHint()))
	default:
		c.replyError(ref, broker.ErrForbidden.With("%s", why))
	}
	return false
}

// permitSession checks a session command against the listener's ceiling:
// each pending request's channel must allow requests here, or the listener
// must when nothing is pending. That is all: the session itself is bound
// to the principal that started it (broker.Hub.NewSession), and its
// requests were decided when they were sent.
func (c *conn) permitSession(ref string, pending []broker.Pending) bool {
	l := c.srv.listener()
	if len(pending) == 0 {
		if c.srv.cfg.Policy.AllowsSomewhere(l, auth.OpRequest) {
			return true
		}
		c.replyError(ref, broker.ErrForbidden.With("request is not allowed on this listener"))
		return false
	}
	ceiling := auth.Listener{Public: l.Public, Mode: auth.ModeOff, Allow: l.Allow}
	now := time.Now()
	for _, p := range pending {
		if v, why := c.srv.cfg.Policy.Decide(ceiling, nil, auth.OpRequest, p.Channel, now); v != auth.Allowed {
			c.replyError(ref, broker.ErrForbidden.With("%s", why))
			return false
		}
	}
	return true
}

// authenticate runs an auth command. A refused credential leaves the
// connection as it was; an accepted one replaces the principal, provided it
// is the same principal (re-authenticating before expiry), and ends at
// once the subscriptions and servings the new grants no longer allow.
func (c *conn) authenticate(ref string, cmd *command) {
	if c.srv.cfg.AuthMode == auth.ModeOff {
		c.replyError(ref, badRequest("this listener does not check credentials"))
		return
	}
	if cmd.Token == nil || *cmd.Token == "" {
		c.replyError(ref, badRequest("missing field \"token\""))
		return
	}
	p, perr := c.srv.verify(c.ctx, *cmd.Token)
	if perr != nil {
		c.srv.countAuth(false)
		c.replyError(ref, perr)
		return
	}
	if old := c.who(); old != nil && old.Owner() != p.Owner() {
		c.srv.countAuth(false)
		c.replyError(ref, broker.ErrForbidden.With("a connection keeps the principal it authenticated as: open a new connection"))
		return
	}
	c.srv.countAuth(true)
	c.setPrincipal(p)
	ack := ackFrame{Ref: ref, Subject: p.Subject}
	if !p.Expires.IsZero() {
		ack.Expires = p.Expires.UTC().Format(time.RFC3339)
	}
	c.reply(encodeAck(ack))
	c.endDisallowed(p)
}

// endDisallowed ends the subscriptions and servings p may no longer have,
// each with an error frame naming its channel, queued after the
// subscription is closed so that no message of it follows.
func (c *conn) endDisallowed(p *auth.Principal) {
	l, now := c.srv.listener(), time.Now()
	for name, sub := range c.subs {
		if v, why := c.srv.cfg.Policy.Decide(l, p, auth.OpSubscribe, name, now); v != auth.Allowed {
			sub.Close()
			delete(c.subs, name)
			c.ended(name, broker.ErrForbidden.With("subscription ended: %s", why))
		}
	}
	for name := range c.servings {
		if v, why := c.srv.cfg.Policy.Decide(l, p, auth.OpServe, name, now); v != auth.Allowed {
			c.stopServing(name)
			c.ended(name, broker.ErrForbidden.With("serving ended: %s", why))
		}
	}
}

func (c *conn) ended(channel string, e *broker.Error) {
	c.srv.countError(e.Code)
	c.reply(encodeEnded(channel, e))
}
