package ws

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tslm/tslm/auth"
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

// legacyCommand is a decoded legacy frame.
type legacyCommand struct {
	kind    string // CreateChannel, Subscribe or NotifyChannel
	channel string // a valid channel name
	data    []byte // NotifyChannel's JSON
}

// parseLegacy decodes a legacy frame: one command with a valid channel, or
// a bad_request or unknown_type error.
func parseLegacy(frame []byte) (legacyCommand, *broker.Error) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(frame, &msg); err != nil || len(msg) != 1 {
		return legacyCommand{}, badRequest("expected an object with one of CreateChannel, Subscribe, NotifyChannel")
	}
	var cmd legacyCommand
	var body json.RawMessage
	for k, b := range msg { // the one entry
		cmd.kind, body = k, b
	}
	var payload legacyPayload
	switch cmd.kind {
	case "CreateChannel", "Subscribe":
		if json.Unmarshal(body, &cmd.channel) != nil {
			return legacyCommand{}, badRequest("%s takes a channel name", cmd.kind)
		}
	case "NotifyChannel":
		var args []json.RawMessage
		if json.Unmarshal(body, &args) != nil || len(args) != 2 ||
			json.Unmarshal(args[0], &cmd.channel) != nil || json.Unmarshal(args[1], &payload) != nil ||
			(payload.Text == nil) == (payload.Json == nil) {
			return legacyCommand{}, badRequest("NotifyChannel takes [channel, {\"Text\": string} or {\"Json\": value}]")
		}
		cmd.data = []byte(payload.Json)
		if payload.Text != nil {
			cmd.data, _ = json.Marshal(*payload.Text) // a string always marshals
		}
	default:
		return legacyCommand{}, broker.ErrUnknownType.With("unknown command %q", truncate(cmd.kind, 64))
	}
	if !backlog.ValidChannel(cmd.channel) {
		return legacyCommand{}, broker.ErrBadChannel
	}
	return cmd, nil
}

func (c *conn) handleLegacy(frame []byte) {
	cmd, perr := parseLegacy(frame)
	if perr != nil {
		c.replyError("", perr)
		return
	}
	kind, channel := cmd.kind, cmd.channel
	// Legacy clients authenticate by the upgrade's header only: the
	// protocol has no auth frame.
	if c.awaitingAuth("") {
		return
	}
	op := map[string]auth.Op{"CreateChannel": auth.OpCreate, "Subscribe": auth.OpSubscribe, "NotifyChannel": auth.OpPublish}[kind]
	if !c.permit("", op, channel) {
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
		c.publish("", channel, cmd.data, func(string) []byte {
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
