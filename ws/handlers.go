package ws

import "github.com/tslm/tslm/broker"

// opOf is the permission a command type needs.
func opOf(commandType string) Ops {
	switch commandType {
	case typeCreate:
		return OpCreate
	case typePublish:
		return OpPublish
	case typeRequest, typeSession:
		return OpRequest
	case typeServe, typeUnserve, typeReply:
		return OpServe
	}
	return OpSubscribe
}

// handle runs one protocol v1 command.
func (c *conn) handle(frame []byte) {
	cmd, ref, perr := parseCommand(frame)
	if perr != nil {
		c.replyError(ref, perr)
		return
	}
	typ := *cmd.Type
	if c.srv.cfg.Allow&opOf(typ) == 0 {
		c.replyError(ref, broker.ErrForbidden.With("%s is not allowed on this listener", typ))
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
		c.replyError(ref, broker.ErrReserved)
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
	c.reply(encodeAck(ackFrame{Ref: ref, Channel: channel, ID: id.String(), Duplicate: &duplicate}))
}
