package backlog

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Blocking commands other than Read's (a blocking Claim's XREADGROUP) run
// on a connection of the node that serves their key, held for the call:
// on a Cluster a blocking command cannot follow a redirection once it
// holds a connection, and CLIENT UNBLOCK must reach the node it blocks on.

// errMoving is a blocking Claim's read answered by a redirection: the
// queue's slot is moving, or another master serves it now. Claim polls
// every movingPause meanwhile.
var errMoving = errors.New("backlog: the request queue's slot is moving")

const movingPause = 50 * time.Millisecond

// isMoving reports whether err says that the node asked does not serve
// the key now: MOVED or ASK, or a TRYAGAIN, CLUSTERDOWN or READONLY while
// a slot moves or a master is replaced.
func isMoving(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsReadOnlyError(err)
}

// isConnError reports whether err is a failure of the connection rather
// than a reply, a cancellation or the backlog closing.
func isConnError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	_, reply := errors.AsType[redis.Error](err)
	return !reply
}

// blockNode is what a blocking command needs of the client of the node
// serving its key: a dedicated connection, and CLIENT UNBLOCK on that
// same node. *redis.Client (standalone, Sentinel) has both.
type blockNode interface {
	Conn() *redis.Conn
	ClientUnblock(ctx context.Context, id int64) *redis.IntCmd
}

var errBlockUnsupported = errors.New("backlog: a blocking Claim needs a standalone, Sentinel or Cluster client")

// nodeFor returns the client of the node that serves key: on a Cluster
// its master's, as the ClusterClient's slot map has it.
func (r *Redis) nodeFor(ctx context.Context, key string) (blockNode, error) {
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case blockNode:
		return c, nil
	}
	return nil, errBlockUnsupported
}

// blockConn is a connection held for blocking commands, with the CLIENT
// ID its node knows it by. A broken *redis.Conn never redials (its pool is
// sticky), so the ID stays true for the connection's life.
type blockConn struct {
	conn *redis.Conn
	id   int64
}

// idleBlockConns is how many idle blockConns are kept per node, so that a
// worker claiming in a loop costs one round trip per Claim, not two (the
// CLIENT ID of a fresh connection).
const idleBlockConns = 16

// getBlockConn returns an idle connection to node, or takes one from its
// pool; reused is true for the former, which may have died while idle.
func (r *Redis) getBlockConn(ctx context.Context, node blockNode) (bc *blockConn, reused bool, err error) {
	r.mu.Lock()
	idle := r.idleBlock[node]
	if n := len(idle); n > 0 {
		bc = idle[n-1]
		r.idleBlock[node] = idle[:n-1]
	}
	r.mu.Unlock()
	if bc != nil {
		return bc, true, nil
	}
	conn := node.Conn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	return &blockConn{conn: conn, id: id}, false, nil
}

// putBlockConn keeps a healthy connection for the next blocking command
// on node, or gives it back to its pool (which drops a broken one).
func (r *Redis) putBlockConn(node blockNode, bc *blockConn, healthy bool) {
	r.mu.Lock()
	if healthy && !r.closed && len(r.idleBlock[node]) < idleBlockConns {
		r.idleBlock[node] = append(r.idleBlock[node], bc)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	bc.conn.Close()
}

// closeIdleBlock gives every idle blockConn back to its pool; r is closed.
func (r *Redis) closeIdleBlock() {
	r.mu.Lock()
	idle := r.idleBlock
	r.idleBlock = nil
	r.mu.Unlock()
	for _, conns := range idle {
		for _, bc := range conns {
			bc.conn.Close()
		}
	}
}

// blockOn runs cmd, a blocking command on key, on a connection of its
// node. go-redis cannot abort a blocked read, so cancellation (ctx, or
// Close) sends CLIENT UNBLOCK to the same node, retrying until cmd returns
// (the UNBLOCK may otherwise arrive before the command blocks), and the
// connection is used again only once no UNBLOCK can follow it. It returns
// ctx.Err() once ctx is done, ErrClosed once r is closed, and cmd's error
// as it is; retry is true when a reused connection failed, so that a
// fresh one may succeed.
func (r *Redis) blockOn(ctx context.Context, key string, cmd func(ctx context.Context, conn *redis.Conn) error) (retry bool, err error) {
	node, err := r.nodeFor(ctx, key)
	if err != nil {
		return false, err
	}
	bc, reused, err := r.getBlockConn(ctx, node)
	if err != nil {
		return false, err
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		bc.conn.Close()
		return false, ErrClosed
	}
	r.blocked[&cancel] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.blocked, &cancel)
		r.mu.Unlock()
	}()

	done := make(chan struct{})
	unblocked := make(chan struct{})
	stop := context.AfterFunc(bctx, func() {
		defer close(unblocked)
		unblock(node, bc.id, done)
	})
	// Not ctx: the command must end by its BLOCK timeout or by UNBLOCK,
	// never by go-redis giving up half-way and poisoning the connection.
	err = cmd(context.WithoutCancel(ctx), bc.conn)
	close(done)
	if !stop() {
		<-unblocked // the UNBLOCK must not hit the connection's next command
	}
	broken := isConnError(err)
	r.putBlockConn(node, bc, !broken)
	switch {
	case ctx.Err() != nil:
		return false, ctx.Err()
	case r.isClosed():
		return false, ErrClosed
	}
	return reused && broken, err
}

// unblockWithin bounds the CLIENT UNBLOCKs sent for one blocked command.
const unblockWithin = 5 * time.Second

// unblock sends CLIENT UNBLOCK id to node until it lands or done closes.
func unblock(node blockNode, id int64, done <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), unblockWithin)
	defer cancel()
	for {
		if n, err := node.ClientUnblock(ctx, id).Result(); err == nil && n == 1 {
			return
		}
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}
