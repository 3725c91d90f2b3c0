package broker

import (
	"encoding/json"
	"sync"
	"unicode/utf8"

	"github.com/tslm/tslm/backlog"
)

// Publication is one event on a channel as subscribers see it: a message, or
// (Gap true) the news that messages after ID were lost. One Publication is
// shared by every subscriber it is fanned out to and must not be modified.
type Publication struct {
	Channel string
	ID      backlog.ID
	// Data is valid JSON; payloads that were not (a publisher's direct
	// XADD of arbitrary bytes) arrive as a JSON string.
	Data []byte
	Gap  bool
	// Deleted, with neither ID nor Data, tells that the channel was
	// deleted: the subscription ends after it.
	Deleted bool
	// Resume, for a gap, is the first message held after the loss, or Zero
	// when unknown: a subscriber already past ID lost something only if
	// there is room for a message between its last one and Resume.
	Resume backlog.ID
	// Prev, for a gap, is the newest message held before Resume when the
	// reader looked, or Zero when none was (or it could not look). A
	// subscriber whose last message is Prev lost nothing before Resume,
	// by the proof a resume after Prev would have: it is behind the
	// reader because the reader's cursor was among entries lost before it
	// subscribed, which its subscribe already reported with
	// resumed:false.
	Prev backlog.ID

	mu     sync.Mutex
	frames [3]cachedFrame // one per protocol: v1, legacy, SSE
}

type cachedFrame struct {
	enc   *Encoder
	frame []byte
}

// Encoder turns a Publication into the bytes of one wire frame. Transports
// declare one Encoder value per protocol and pass the same pointer every
// time, so that a publication is encoded once per protocol however many
// subscribers receive it.
type Encoder struct {
	Encode func(p *Publication) []byte
}

// Frame returns p encoded by e, encoding it on first use. Safe for
// concurrent use; the returned bytes must not be modified.
func (p *Publication) Frame(e *Encoder) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.frames {
		switch p.frames[i].enc {
		case e:
			return p.frames[i].frame
		case nil:
			p.frames[i] = cachedFrame{enc: e, frame: e.Encode(p)}
			return p.frames[i].frame
		}
	}
	return e.Encode(p)
}

func newPublication(channel string, m backlog.Message) *Publication {
	return &Publication{Channel: channel, ID: m.ID, Data: AsJSON(m.Data)}
}

func newDeleted(channel string) *Publication {
	return &Publication{Channel: channel, Deleted: true}
}

func newGap(channel string, after, resume backlog.ID) *Publication {
	return &Publication{Channel: channel, ID: after, Gap: true, Resume: resume}
}

// AsJSON passes JSON through and turns anything else into a JSON string, so
// that a publisher's malformed payload (or an app's request or reply, also
// written to Redis by apps) reaches clients instead of breaking every frame
// it is embedded in. json.Valid accepts invalid UTF-8 inside
// strings, which would make WebSocket text frames invalid, so such payloads
// become strings too, with the bad bytes replaced by U+FFFD.
func AsJSON(data []byte) []byte {
	if json.Valid(data) && utf8.Valid(data) {
		return data
	}
	quoted, _ := json.Marshal(string(data)) // a string always marshals
	return quoted
}
