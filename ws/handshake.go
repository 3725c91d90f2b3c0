package ws

import (
	"net/http"
	"slices"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
)

// The upgrade's subprotocol and the listener's tokens, docs/protocol.md
// "Connecting" and "Listener tokens". The original TSLM's clients offer a
// listener token as their only subprotocol, so a token is one of the
// values offered: it is taken out before the protocol is chosen, and when
// the server has nothing else to answer it answers with the token itself,
// as RFC 6455 (section 4.1) has a client fail a handshake whose answer
// names none of the values it offered.

// maxOffered bounds the subprotocols an upgrade may offer: each is hashed
// against the listener's tokens, and no client needs more than a few.
const maxOffered = 16

// TokenParam is the query parameter that carries a listener token on an
// event stream, which EventSource cannot give a header.
const TokenParam = "auth_token"

// handshake is what an upgrade will speak and answer.
type handshake struct {
	legacy bool   // the tslm.legacy framing, else v1
	answer string // the Sec-WebSocket-Protocol answered; "" for none
}

// negotiate checks the listener's token and chooses the subprotocol of an
// upgrade on the original endpoint (root) or /v1/ws, or answers the
// refusal itself: 401 without a token the listener admits, 400 for
// subprotocols it does not speak. The bodies never repeat an offered
// value, which may be a mistyped token.
func (s *Server) negotiate(w http.ResponseWriter, r *http.Request, root bool) (handshake, bool) {
	offered := websocket.Subprotocols(r)
	if len(offered) > maxOffered {
		s.refuse(w, refusedSubprotocol, http.StatusBadRequest, 0, "too many subprotocols offered: offer at most 16")
		return handshake{}, false
	}
	// token is the offered value that is one of the listener's tokens,
	// rest the others.
	var token string
	rest := offered
	if s.cfg.Tokens != nil {
		rest = make([]string, 0, len(offered))
		for _, p := range offered {
			if token == "" && p != ProtocolV1 && p != ProtocolLegacy && s.cfg.Tokens.Match(p) {
				token = p
				continue
			}
			rest = append(rest, p)
		}
		tried := slices.ContainsFunc(rest, func(p string) bool { return p != ProtocolV1 && p != ProtocolLegacy })
		if token == "" && !s.headerToken(w, r, tried) {
			return handshake{}, false
		}
	}
	hasV1, hasLegacy := slices.Contains(rest, ProtocolV1), slices.Contains(rest, ProtocolLegacy)
	switch {
	case root && hasLegacy:
		return handshake{legacy: true, answer: ProtocolLegacy}, true
	case root && token != "":
		return handshake{legacy: true, answer: token}, true
	case root && len(offered) == 0:
		return handshake{legacy: true}, true
	case root && hasV1:
		s.refuse(w, refusedSubprotocol, http.StatusBadRequest, 0,
			"tslm.v1 is served at /v1/ws: this endpoint speaks the original TSLM protocol; offer no subprotocol, tslm.legacy, or a listener token")
		return handshake{}, false
	case root:
		s.refuse(w, refusedSubprotocol, http.StatusBadRequest, 0,
			"unsupported subprotocol: this endpoint speaks the original TSLM protocol; offer no subprotocol, tslm.legacy, or a listener token")
		return handshake{}, false
	case hasV1:
		return handshake{answer: ProtocolV1}, true
	case hasLegacy:
		return handshake{legacy: true, answer: ProtocolLegacy}, true
	case token != "":
		return handshake{answer: token}, true
	case len(offered) == 0:
		return handshake{}, true
	}
	s.refuse(w, refusedSubprotocol, http.StatusBadRequest, 0, "unsupported subprotocol: offer tslm.v1 or tslm.legacy")
	return handshake{}, false
}

// headerToken checks the token of the TSLM-Auth-Token header, the way in
// for clients that can set headers, or answers 401; tried says a
// subprotocol offered might have been meant as a token.
func (s *Server) headerToken(w http.ResponseWriter, r *http.Request, tried bool) bool {
	values := r.Header.Values(auth.ListenerTokenHeader)
	switch {
	case len(values) == 0 && !tried:
		s.refuseToken(w, false, "no listener token: this listener admits only clients that present one of its auth_tokens, "+
			"as the WebSocket subprotocol (Sec-WebSocket-Protocol) or in the "+auth.ListenerTokenHeader+" header")
		return false
	case len(values) != 1 || !s.cfg.Tokens.Match(values[0]):
		s.refuseToken(w, false, "listener token refused: present one of this listener's auth_tokens")
		return false
	}
	return true
}

// streamToken checks an event stream's listener token, from the
// TSLM-Auth-Token header or the auth_token parameter (EventSource cannot
// set headers), or answers 401.
func (s *Server) streamToken(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Tokens == nil {
		return true
	}
	header := r.Header.Values(auth.ListenerTokenHeader)
	param := r.URL.Query()[TokenParam]
	switch {
	case len(header)+len(param) == 0:
		s.refuseToken(w, true, "no listener token: this listener admits only clients that present one of its auth_tokens, "+
			"in the "+auth.ListenerTokenHeader+" header or the "+TokenParam+" parameter")
		return false
	case len(header)+len(param) > 1:
		s.refuseToken(w, true, "more than one listener token: send one, in the "+auth.ListenerTokenHeader+" header or the "+TokenParam+" parameter")
		return false
	case !s.cfg.Tokens.Match(append(header, param...)[0]):
		s.refuseToken(w, true, "listener token refused: present one of this listener's auth_tokens")
		return false
	}
	return true
}

// refuseToken answers 401 to a request without a token the listener
// admits; stream says to answer as event streams do, in JSON.
func (s *Server) refuseToken(w http.ResponseWriter, stream bool, msg string) {
	w.Header().Set("WWW-Authenticate", auth.ListenerTokenChallenge)
	if stream {
		s.stats.refused[refusedToken].Add(1)
		sseError(w, http.StatusUnauthorized, 0, broker.CodeUnauthorized, msg)
		return
	}
	s.refuse(w, refusedToken, http.StatusUnauthorized, 0, msg)
}
