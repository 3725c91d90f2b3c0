package ws

import (
	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
)

// opOf is the operation a command needs on its channel; 0 for those that
// need nothing beyond what they undo (unsubscribe, unserve).
func opOf(commandType string) auth.Op {
	switch commandType {
	case typeCreate:
		return auth.OpCreate
	case typeSubscribe:
		return auth.OpSubscribe
	case typePublish:
		return auth.OpPublish
	case typeRequest:
		return auth.OpRequest
	case typeServe, typeReply:
		return auth.OpServe
	}
	return 0
}

// handle runs one protocol v1 command.
func (c *conn) handle(frame []byte) {
	cmd, ref, perr := parseCommand(frame)
	if perr != nil {
		c.replyError(ref, perr)
		return
	}
	typ := *cmd.Type
	if typ == typeAuth {
		c.authenticate(ref, &cmd)
		return
	}
	if c.awaitingAuth(ref) {
		return
	}
	if typ == typeSession {
		c.resumeSession(ref, &cmd)
		return
	}
	channel := *cmd.Channel
	if broker.IsReserved(channel) {
		// The hub refuses them too; refusing here keeps local commands
		// (unsubscribe, unserve) in line and spares the backlog a trip.
		// No credentials would change it.
		c.replyError(ref, broker.ErrReserved)
		return
	}
	if op := opOf(typ); op != 0 && !c.permit(ref, op, channel) {
		return
	}
	switch typ {
	case typeCreate:
		opts, perr := cmd.channelOptions()
		if perr != nil {
			c.replyError(ref, perr)
			return
		}
		created, err := c.srv.hub.Create(c.ctx, channel, opts)
		if err != nil {
			c.replyError(ref, err)
			return
		}
		c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel, Created: &created}))

	case typeSubscribe:
		from, perr := cmd.subscribeFrom()
		if perr != nil {
			c.replyError(ref, perr)
			return
		}
		c.subscribe(ref, channel, from, func(res broker.SubscribeResult) []byte {
			head := res.Head.String()
			ack := ackFrame{Ref: ref, Channel: channel, Head: &head}
			if from.Since != nil {
				ack.Resumed = &res.Resumed
			}
			return encodeAck(ack)
		})

	case typeUnsubscribe:
		c.unsubscribe(channel)
		c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel}))

	case typePublish:
		if len(cmd.Data) == 0 {
			c.replyError(ref, badRequest("missing field \"data\""))
			return
		}
		if cmd.IdempotencyKey != nil {
			c.publishOnce(ref, channel, cmd.Data, *cmd.IdempotencyKey)
			return
		}
		c.publish(ref, channel, cmd.Data, func(id string) []byte {
			return encodeAck(ackFrame{Ref: ref, Channel: channel, ID: id})
		})

	case typeRequest:
		c.request(ref, channel, &cmd)

	case typeServe:
		c.startServing(ref, channel)

	case typeUnserve:
		c.stopServing(channel)
		c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel}))

	case typeReply:
		c.answer(ref, channel, &cmd)
	}
}

// publish checks the payload size and publishes; ack frames the answer.
func (c *conn) publish(ref, channel string, data []byte, ack func(id string) []byte) {
	if len(data) > c.srv.cfg.MaxDataBytes {
		c.replyError(ref, broker.ErrTooLarge.With("data is larger than %d bytes", c.srv.cfg.MaxDataBytes))
		return
	}
	id, err := c.srv.hub.Publish(c.ctx, channel, data)
	if err != nil {
		c.replyError(ref, err)
		return
	}
	c.srv.stats.published.Add(1)
	c.reply(ack(id.String()))
}

// publishOnce is a v1 publish with an idempotency key: its ack tells
// whether the key had published already.
func (c *conn) publishOnce(ref, channel string, data []byte, key string) {
	if len(data) > c.srv.cfg.MaxDataBytes {
		c.replyError(ref, broker.ErrTooLarge.With("data is larger than %d bytes", c.srv.cfg.MaxDataBytes))
		return
	}
	id, duplicate, err := c.srv.hub.PublishIdempotent(c.ctx, channel, data, key)
	if err != nil {
		c.replyError(ref, err)
		return
	}
	if !duplicate {
		c.srv.stats.published.Add(1)
	}
	c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel, ID: id.String(), Duplicate: &duplicate}))
}
