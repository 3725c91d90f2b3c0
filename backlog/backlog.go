package backlog

import (
	"context"
	"errors"
	"time"
)

// Log is the durable, per-channel, append-only message log behind the
// gateway. Every implementation must pass backlogtest.Run, the conformance
// suite, so that a client cannot tell which one served it.
//
// Implementations are safe for concurrent use.
type Log interface {
	// Create makes channel with cfg. created is false when the channel
	// already existed; its configuration is then left unchanged.
	Create(ctx context.Context, channel string, cfg ChannelConfig) (created bool, err error)

	// Info describes channel, or returns ErrNotFound.
	Info(ctx context.Context, channel string) (Info, error)

	// Append adds data to channel, trims it to its MaxLen, and returns the
	// new message's ID, which is greater than every ID channel ever had.
	Append(ctx context.Context, channel string, data []byte) (ID, error)

	// AppendIdempotent is Append made safe to retry. The first call with
	// idem.Key on channel appends and remembers the new ID for
	// idem.Window; a later call with the same key within the window
	// appends nothing and returns that ID with duplicate set, whatever
	// its data: the key alone identifies the message. Remembering and
	// appending are one atomic step, so a publisher that retries after
	// an error (the first attempt may have been stored) stores the
	// message at most once. Keys die with their channel: a channel
	// deleted and created again does not know the old keys.
	// idem.Key must pass ValidIdempotencyKey and idem.Window be positive.
	AppendIdempotent(ctx context.Context, channel string, data []byte, idem Idempotency) (id ID, duplicate bool, err error)

	// Delete removes channel: its messages, its configuration and its
	// idempotency keys, or returns ErrNotFound. Every Follower following it,
	// on any replica, then reports a Batch with Deleted set. A channel
	// created again under the same name is a new channel: resuming from
	// an ID of the old one is not continuous.
	Delete(ctx context.Context, channel string) error

	// List returns up to limit names of channels that start with prefix,
	// from cursor ("" for the first page), and the cursor of the next
	// page, "" once the walk is done. A page may hold fewer than limit
	// names, even none, before the walk is done. A walk returns every
	// channel that exists throughout it at least once (the Redis backlog
	// may return a name twice); channels created or deleted during the
	// walk may or may not appear. Cursors are opaque; a malformed one
	// is ErrBadCursor.
	List(ctx context.Context, prefix, cursor string, limit int) (names []string, next string, err error)

	// Range returns up to limit messages with IDs strictly after after,
	// oldest first. Page.Continuous tells whether the log can prove that
	// nothing after after was lost: see Page.
	Range(ctx context.Context, channel string, after ID, limit int) (Page, error)

	// Before reports whether the message id is held and, when it is, the
	// ID of the newest message held before it (Zero when none is). Both
	// come from one atomic look, so they prove what a Range after prev
	// would: a reader whose last message is prev lost nothing before id.
	// The broker asks it when a Follower reports a gap, for subscribers that
	// are behind the reader's cursor because that cursor's entry was lost.
	Before(ctx context.Context, channel string, id ID) (prev ID, held bool, err error)

	// TailStart returns the ID of the oldest of the newest n messages, or
	// Zero when the channel holds
	// none or n < 1. It reads no payload, so that a replay of the newest n
	// can then page forward with Range (after TailStart's ID.Prev) instead
	// of holding all n at once; the first message that Range returns is
	// that ID unless it was trimmed meanwhile.
	TailStart(ctx context.Context, channel string, n int) (ID, error)

	// NewFollower returns a follower of channels (see Follower), which
	// the caller closes. It connects lazily: storage errors come from its
	// Next.
	NewFollower() Follower

	// TrimExpired removes, from every channel with a Retention, the
	// messages older than it, except the channel's newest message, which
	// stays however old, and frees channels whose Expiry passed (which
	// are gone for every other method already). Safe to call from several
	// replicas at once.
	TrimExpired(ctx context.Context) error

	// Close releases the log's resources. Calls in flight may fail.
	Close() error
}

// Pinger is implemented by logs that can check they are reachable without
// touching a channel, for readiness probes. A Log without it is always
// reachable (Memory).
type Pinger interface {
	Ping(ctx context.Context) error
}

// ChannelConfig is a channel's retention policy. Zero values mean unbounded;
// the broker fills in the operator's defaults before calling Create.
type ChannelConfig struct {
	// MaxLen bounds the number of messages kept.
	MaxLen int64
	// Retention bounds the age of messages kept, judged by the millisecond
	// part of their IDs, as Redis's XTRIM MINID does. The newest message
	// is kept however old, so that a client that saw it can always prove
	// it resumes right after it.
	Retention time.Duration
	// Expiry, when > 0, deletes the channel (meta, messages, idempotency
	// keys) once Expiry passes with no Create or Append of it: Create of
	// an existing channel with Expiry > 0 leaves its configuration
	// unchanged but restarts the countdown, and so does each Append. An
	// expired channel is as if it never existed. Session inboxes use it.
	Expiry time.Duration
}

// Info describes a channel.
type Info struct {
	Config  ChannelConfig
	Created time.Time
	// Length is the number of messages held now.
	Length int64
	// FirstID is the oldest message held, Zero when the channel is empty.
	FirstID ID
	// LastID is the newest ID ever appended, Zero when none was. Every
	// later message has a greater ID. As neither MaxLen nor Retention
	// removes a channel's newest message, it is held too, unless the
	// storage lost it (a publisher's own trim, a reset).
	LastID ID
}

// Message is one entry of a channel. Data is JSON.
type Message struct {
	ID   ID
	Data []byte
}

// Page is the answer to Range.
type Page struct {
	Messages []Message
	// Continuous is true only when the log proves that the messages
	// returned follow after with nothing lost in between: the entry after
	// is still held, or after is Zero and nothing was ever removed from
	// the channel. It is false when after was trimmed, was never in this
	// log (for instance, the log was reset), or lies beyond its head.
	Continuous bool
}

// Cursor is a position to follow from: messages strictly after After.
type Cursor struct {
	Channel string
	After   ID
}

// Batch is what a Follower found on one channel.
type Batch struct {
	Channel string
	// Follow is the number the Follow call that this batch continues
	// returned (Follower.Follow).
	Follow uint64
	// After is the cursor the batch follows: Messages come after it.
	After    ID
	Messages []Message
	// Gap is false only when the log proves that Messages follow the
	// cursor with nothing lost in between: the cursor entry is still held,
	// or the cursor is Zero and nothing was ever removed, or Messages[0]
	// is the cursor's immediate successor (ID.Next). Otherwise messages
	// after the cursor may have been removed before the follower could
	// return them, and Messages start at the oldest one held after the cursor.
	Gap bool
	// Deleted reports that the channel was deleted; Messages is then
	// empty and the cursor means nothing any more. A channel deleted and
	// created again before the follower noticed may instead show as a
	// Gap.
	Deleted bool
}

// Idempotency makes an append idempotent; see Log.AppendIdempotent.
type Idempotency struct {
	// Key names the publish; see ValidIdempotencyKey.
	Key string
	// Window is how long the key is remembered after the first append
	// with it. Retries do not extend it.
	Window time.Duration
}

// MaxIdempotencyKeyLen is the longest idempotency key in bytes.
const MaxIdempotencyKeyLen = 128

// ValidIdempotencyKey reports whether key is 1–128 bytes of visible ASCII
// (0x21–0x7E): safe in an HTTP header, a JSON string and a Redis key.
func ValidIdempotencyKey(key string) bool {
	if len(key) == 0 || len(key) > MaxIdempotencyKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// Errors shared by every implementation; test with errors.Is.
var (
	ErrNotFound    = errors.New("channel not found")
	ErrUnavailable = errors.New("backlog: storage unavailable")
	ErrLimit       = errors.New("backlog: limit reached")
	ErrClosed      = errors.New("backlog: closed")
	ErrBadCursor   = errors.New("malformed list cursor: pass the cursor of the previous page as is")
)

// MaxChannelLen is the longest channel name in bytes.
const MaxChannelLen = 128

// ValidChannel reports whether name is 1–128 bytes of [A-Za-z0-9._:-]. The
// set keeps names safe inside Redis keys, URL paths and JSON without escaping.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
