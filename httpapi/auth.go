package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/bearer"
)

// Authenticator turns a credential presented as Authorization: Bearer into
// the principal it stands for. Its errors wrap auth.ErrUnauthenticated
// when the credential is refused; their text may be shown to the client.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (*auth.Principal, error)
}

var _ Authenticator = (*auth.Authenticator)(nil)

// Stats are an API's counters, for metrics.
type Stats struct {
	// AuthOK and AuthRefused count the credentials checked, one per
	// request that carried one.
	AuthOK, AuthRefused int64
	// Published counts the messages published (appended to the backlog;
	// a duplicate of an idempotent publish is not).
	Published int64
}

// Stats returns the API's counters.
func (a *API) Stats() Stats {
	return Stats{AuthOK: a.authOK.Load(), AuthRefused: a.authRefused.Load(), Published: a.published.Load()}
}

// listener is the internal listener's share of every decision: it allows
// every operation, within its auth mode.
func (a *API) listener() auth.Listener {
	return auth.Listener{Mode: a.cfg.AuthMode, Allow: auth.AllOps}
}

// principal authenticates r's Authorization header, on an API that checks
// credentials, or answers 401 and returns false. No header is no
// principal, except where credentials are required.
func (a *API) principal(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	if a.cfg.AuthMode == auth.ModeOff {
		return nil, true
	}
	cred, present, ok := bearer.FromRequest(r)
	switch {
	case !present && a.cfg.AuthMode == auth.ModeRequired:
		a.unauthorized(w, "", "this listener requires credentials: send Authorization: Bearer <credential>")
		return nil, false
	case !present:
		return nil, true
	case !ok:
		a.authRefused.Add(1)
		a.unauthorized(w, bearer.Malformed, bearer.Malformed)
		return nil, false
	case a.cfg.Authenticator == nil:
		a.authRefused.Add(1)
		msg := "credentials refused: this listener has no way to check them"
		a.unauthorized(w, msg, msg)
		return nil, false
	}
	p, err := a.cfg.Authenticator.Authenticate(r.Context(), cred)
	if err != nil || p == nil {
		a.authRefused.Add(1)
		msg, checked := bearer.Refusal(err)
		if !checked {
			a.cfg.Logger.WarnContext(r.Context(), "http api: credentials could not be checked", "err", err)
		}
		a.unauthorized(w, msg, msg)
		return nil, false
	}
	a.authOK.Add(1)
	return p, true
}

// allowed authenticates r and decides whether it may perform op on
// channel, answering a refusal (401 or 403) itself. A channel that is
// not a valid name, or is reserved, is left for the hub to refuse as it
// does without credentials: no credentials would change that.
func (a *API) allowed(w http.ResponseWriter, r *http.Request, op auth.Op, channel string) bool {
	who, ok := a.principal(w, r)
	if !ok {
		return false
	}
	if a.cfg.AuthMode == auth.ModeOff || !backlog.ValidChannel(channel) || broker.IsReserved(channel) {
		return true
	}
	switch v, why := a.cfg.Policy.Decide(a.listener(), who, op, channel, time.Now()); v {
	case auth.Allowed:
		return true
	case auth.Unauthenticated:
		a.unauthorized(w, "", why+" (send Authorization: Bearer <credential>)")
	default:
		writeError(w, http.StatusForbidden, broker.CodeForbidden, why)
	}
	return false
}

// mayList reports which of names who may subscribe to: a listing shows
// only those.
func (a *API) mayList(who *auth.Principal, names []string) []string {
	if a.cfg.AuthMode == auth.ModeOff {
		return names
	}
	l, now := a.listener(), time.Now()
	kept := names[:0]
	for _, n := range names {
		if v, _ := a.cfg.Policy.Decide(l, who, auth.OpSubscribe, n, now); v == auth.Allowed {
			kept = append(kept, n)
		}
	}
	return kept
}

// unauthorized answers 401 with a challenge (RFC 6750, section 3): with
// invalid_token and its description when a credential was refused, bare
// when none was presented.
func (a *API) unauthorized(w http.ResponseWriter, refused, msg string) {
	w.Header().Set("WWW-Authenticate", bearer.Challenge(refused))
	writeError(w, http.StatusUnauthorized, broker.CodeUnauthorized, msg)
}
