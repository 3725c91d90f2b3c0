package backlog

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// FunctionLibrary is the name of the Redis Function library (Redis 7
// Functions) that LoadFunctions loads. Its function tslm_publish appends
// to a channel as Append does, notification included, for trusted
// publishers that write to Redis directly (docs/redis.md):
//
//	FCALL tslm_publish 3 <prefix>meta:{<ch>} <prefix>ch:{<ch>} <prefix>req:{<ch>} <data>
//
// It returns the new entry's ID, or an error reply when the channel does
// not exist or the keys are not one channel's. All three keys are
// declared, as Cluster wants of every key a function touches: the request
// queue is there for an expiring channel's countdown, which every append
// restarts.
const FunctionLibrary = "tslm"

// functionSource is the library's code. Its body is appendScript's, built
// from the same constants, so that a direct publisher's append and the
// gateway's cannot drift apart: same trim, same countdown, same
// notification. The wrapper only checks the call's shape and turns the
// body's nil for a missing channel into an error, which a publisher
// cannot mistake for success. The keys must name one channel under one
// prefix: a publisher's typo would otherwise notify one channel of an
// entry stored in another's stream.
const functionSource = "#!lua name=" + FunctionLibrary + "\n" + luaRefresh + luaNotify + `
local function append(KEYS, ARGV)
` + luaAppendBody + `
end
redis.register_function('tslm_publish', function(keys, args)
  local usage = 'ERR tslm: usage: FCALL tslm_publish 3 <prefix>meta:{<ch>} <prefix>ch:{<ch>} <prefix>req:{<ch>} <data>'
  if #keys ~= 3 or #args ~= 1 then return redis.error_reply(usage) end
  local p, name = string.match(keys[2], '^(.*)ch:{([^{}]*)}$')
  if not p or keys[1] ~= p .. 'meta:{' .. name .. '}' or keys[3] ~= p .. 'req:{' .. name .. '}' then
    return redis.error_reply(usage)
  end
  local id = append(keys, args)
  if not id then return redis.error_reply('ERR tslm: no such channel') end
  return id
end)
`

// LoadFunctions loads the tslm library (FunctionLibrary) into Redis: on
// a Cluster into every master, as Redis does not spread functions across
// a cluster itself (replicas get them from their master). Redis keeps
// functions in its RDB and AOF and replicates them, so loading is needed
// once per server, not per connection; loading again is harmless.
//
// FUNCTION LOAD REPLACE lets the last caller win. That is acceptable
// without a version check: the library is the caller's append script, so
// during a rolling upgrade an older gateway that loads it last puts back
// the append that it, and the other old gateways, still run anyway; the
// last gateway to start, once the upgrade is done, loads the new one.
//
// Errors wrap ErrUnavailable when Redis could not be reached (try again
// later); an error reply (Redis before 7, a managed Redis that forbids
// FUNCTION, an ACL without it) is returned plain.
func (r *Redis) LoadFunctions(ctx context.Context) error {
	if r.isClosed() {
		return ErrClosed
	}
	var err error
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FunctionLoadReplace(ctx, functionSource).Err()
		})
	} else {
		err = r.client.FunctionLoadReplace(ctx, functionSource).Err()
	}
	return r.wrap(ctx, err)
}
