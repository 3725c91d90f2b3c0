package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/tslm/tslm/backlog"
)

// The reply envelope: what a responder appends to a session's inbox, the
// same from a serving WebSocket app (Serving.Reply) and from a Redis app
// (its own XADD, docs/redis.md):
//
//	{"channel":"orders","id":"<request id>","data":<any JSON>}
//	{"channel":"orders","id":"<request id>","error":{"code":"<code>","message":"<text>"}}

type replyEnvelope struct {
	Channel string          `json:"channel"`
	ID      string          `json:"id"`
	Data    json.RawMessage `json:"data,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

// reply is a parsed envelope.
type reply struct {
	key     requestKey
	data    []byte
	refusal *Refusal
}

// Bounds on a Refusal.
const (
	MaxRefusalCode    = 64
	MaxRefusalMessage = 1024
)

// CheckRefusal reports whether r may be sent to a requester: a code of
// 1–64 bytes of [a-z0-9_.-] and a message of at most 1024 bytes of UTF-8.
func CheckRefusal(r Refusal) error {
	if len(r.Code) == 0 || len(r.Code) > MaxRefusalCode || len(r.Message) > MaxRefusalMessage || !utf8.ValidString(r.Message) {
		return ErrBadRefusal
	}
	for i := 0; i < len(r.Code); i++ {
		switch c := r.Code[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return ErrBadRefusal
		}
	}
	return nil
}

// encodeReply makes the envelope answering request id of channel with data
// (JSON) or refusal, exactly one of them.
func encodeReply(channel string, id backlog.ID, data []byte, refusal *Refusal) ([]byte, error) {
	e := replyEnvelope{Channel: channel, ID: id.String()}
	switch {
	case (data == nil) == (refusal == nil):
		return nil, ErrBadRequest.With("a reply has either data or an error")
	case refusal != nil:
		if err := CheckRefusal(*refusal); err != nil {
			return nil, err
		}
		e.Error, _ = json.Marshal(refusal) // two strings always marshal
	default:
		if !json.Valid(data) {
			return nil, ErrBadRequest.With("a reply's data must be JSON")
		}
		e.Data = data
	}
	// Marshal compacts data and mends invalid UTF-8 in its strings.
	b, err := json.Marshal(e)
	if err != nil {
		return nil, ErrInternal.Wrap(err)
	}
	return b, nil
}

// parseReply reads an inbox entry: an envelope naming a valid channel and
// request ID, with exactly one of data and a well-formed error.
func parseReply(b []byte) (reply, error) {
	var e replyEnvelope
	if err := json.Unmarshal(b, &e); err != nil {
		return reply{}, fmt.Errorf("not a reply envelope: %w", err)
	}
	id, err := backlog.ParseID(e.ID)
	if err != nil {
		return reply{}, fmt.Errorf("request id %q: %w", e.ID, err)
	}
	if checkChannel(e.Channel) != nil {
		return reply{}, fmt.Errorf("channel %q is not a request channel", e.Channel)
	}
	r := reply{key: requestKey{e.Channel, id}}
	switch {
	case (e.Data == nil) == (e.Error == nil):
		return reply{}, errors.New("a reply has either data or an error")
	case e.Error != nil:
		var f Refusal
		if err := json.Unmarshal(e.Error, &f); err != nil {
			return reply{}, fmt.Errorf("error: %w", err)
		}
		if err := CheckRefusal(f); err != nil {
			return reply{}, err
		}
		r.refusal = &f
	default:
		r.data = e.Data
	}
	return r, nil
}
