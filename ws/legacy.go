package ws

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// The tslm.legacy subprotocol keeps clients of the original Rust TSLM
// working: externally tagged enums, no refs, no IDs, live subscriptions only.
// It is a thin adapter onto the same hub and permissions as v1.

// legacyPayload is the original's message body: exactly one of Text or Json.
type legacyPayload struct {
	Text *string         `json:"Text,omitempty"`
	Json json.RawMessage `json:"Json,omitempty"`
}

func (c *conn) handleLegacy(frame []byte) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(frame, &msg); err != nil || len(msg) != 1 {
		c.replyError("", badRequest("expected an object with one of CreateChannel, Subscribe, NotifyChannel"))
		return
	}
	for kind, body := range msg {
		c.handleLegacyCommand(kind, body)
	}
}

func (c *conn) handleLegacyCommand(kind string, body json.RawMessage) {
	var channel string
	var payload legacyPayload
	switch kind {
	case "CreateChannel", "Subscribe":
		if json.Unmarshal(body, &channel) != nil {
			c.replyError("", badRequest("%s takes a channel name", kind))
			return
		}
	case "NotifyChannel":
		var args []json.RawMessage
		if json.Unmarshal(body, &args) != nil || len(args) != 2 ||
			json.Unmarshal(args[0], &channel) != nil || json.Unmarshal(args[1], &payload) != nil ||
			(payload.Text == nil) == (payload.Json == nil) {
			c.replyError("", badRequest("NotifyChannel takes [channel, {\"Text\": string} or {\"Json\": value}]"))
			return
		}
	default:
		c.replyError("", broker.ErrUnknownType.With("unknown command %q", truncate(kind, 64)))
		return
	}
	if !backlog.ValidChannel(channel) {
		c.replyError("", broker.ErrBadChannel)
		return
	}
	op := map[string]Ops{"CreateChannel": OpCreate, "Subscribe": OpSubscribe, "NotifyChannel": OpPublish}[kind]
	if c.srv.cfg.Allow&op == 0 {
		c.replyError("", broker.ErrForbidden.With("%s is not allowed on this listener", kind))
		return
	}
	switch kind {
	case "CreateChannel":
		created, err := c.srv.hub.Create(c.ctx, channel, broker.ChannelOptions{})
		if err != nil {
			c.replyError("", err)
			return
		}
		if created {
			c.reply(legacySuccess("Channel " + channel + " created"))
		} else {
			c.reply(legacySuccess("Channel " + channel + " already exists"))
		}
	case "Subscribe":
		c.subscribe("", channel, broker.From{}, func(broker.SubscribeResult) []byte {
			return legacySuccess("Subscribed to " + channel)
		})
	case "NotifyChannel":
		data := []byte(payload.Json)
		if payload.Text != nil {
			data, _ = json.Marshal(*payload.Text) // a string always marshals
		}
		c.publish("", channel, data, func(string) []byte {
			return legacySuccess("Message sent to " + channel)
		})
	}
}

func legacySuccess(text string) []byte {
	b, _ := json.Marshal(map[string]string{"Success": text})
	return b
}

func encodeLegacyError(code broker.Code, message string) []byte {
	b, _ := json.Marshal(map[string]string{"Error": string(code) + ": " + message})
	return b
}

// legacyEncoder frames publications the original way: JSON strings as Text,
// every other value as Json. A gap has no legacy frame, so it is an Error.
var legacyEncoder = &broker.Encoder{Encode: func(p *broker.Publication) []byte {
	if p.Deleted {
		return encodeLegacyError("deleted", "channel "+p.Channel+" was deleted")
	}
	if p.Gap {
		return encodeLegacyError("gap", fmt.Sprintf("messages after %s on %s were lost", p.ID, p.Channel))
	}
	tag := `{"Json":`
	if bytes.HasPrefix(p.Data, []byte(`"`)) {
		tag = `{"Text":`
	}
	b := make([]byte, 0, 40+len(p.Channel)+len(p.Data))
	b = append(b, `{"ChannelMessage":["`...)
	b = append(b, p.Channel...)
	b = append(b, `",`...)
	b = append(b, tag...)
	b = append(b, p.Data...)
	return append(b, `}]}`...)
}}
