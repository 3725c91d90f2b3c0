package broker

import "github.com/tslm/tslm/backlog"

// The replay/live merge as pure logic over one subscription's state, so that
// every case can be table-tested without timing: live publications are
// buffered while the replay sends the backlog part, then merged in by ID
// (dedupe, gaps restated for this subscriber), unless the buffer overflowed,
// in which case the replay re-reads the backlog, up to a limit.

// liveBuffer holds the live publications offered to a subscription while its
// replay runs.
type liveBuffer struct {
	pubs       []*Publication
	overflowed bool
}

// add buffers p unless max are held already: then it drops them all and
// records the overflow, and drops everything offered until the next take.
// What was dropped is in the backlog, after what the replay sent, so an
// overflow costs backlog reads, never messages.
func (b *liveBuffer) add(p *Publication, max int) {
	switch {
	case b.overflowed:
	case len(b.pubs) >= max:
		b.pubs, b.overflowed = nil, true
	default:
		b.pubs = append(b.pubs, p)
	}
}

// take empties the buffer and returns what it held and whether it
// overflowed since the last take.
func (b *liveBuffer) take() (pubs []*Publication, overflowed bool) {
	pubs, overflowed = b.pubs, b.overflowed
	b.pubs, b.overflowed = nil, false
	return pubs, overflowed
}

// news returns what p means to a subscriber whose last message is lastSent:
// p itself, a gap of its own, or nil when p tells it nothing new.
func news(lastSent backlog.ID, p *Publication) *Publication {
	switch {
	case p.Deleted:
		return p // the end, whatever it has
	case !p.Gap:
		if lastSent.Less(p.ID) {
			return p
		}
		return nil
	case p.ID == lastSent:
		return p // the loss starts after what it has
	case !p.Prev.IsZero() && p.Prev == lastSent:
		return nil // it has the newest message held before the first one after the loss
	case lastSent.Less(p.ID):
		// The reader's cursor is past what it has: an entry lost before it
		// subscribed, or one that never reached it. What is lost to it
		// starts after its own last message.
		return newGap(p.Channel, lastSent, p.Resume)
	case p.Resume.IsZero() || lastSent.Next().Less(p.Resume):
		// Its replay read the backlog past the reader's cursor, so the
		// reader's gap starts too early for it; but messages between its
		// last one and the first one held are lost to it too.
		return newGap(p.Channel, lastSent, p.Resume)
	}
	return nil // it already has everything up to the first message held
}

// merge returns, in order, what of buffered a subscriber whose last message
// is lastSent still needs: each publication's news, lastSent advancing past
// every message kept.
func merge(lastSent backlog.ID, buffered []*Publication) []*Publication {
	var out []*Publication
	for _, p := range buffered {
		if p = news(lastSent, p); p == nil {
			continue
		}
		out = append(out, p)
		if p.Deleted {
			break // nothing after the end
		}
		if !p.Gap {
			lastSent = p.ID
		}
	}
	return out
}

// step is what a replay does once it has sent its backlog pages.
type step int

const (
	stepLive   step = iota // nothing buffered: switch to live delivery
	stepMerge              // send the buffer's news, then look again
	stepReread             // the buffer overflowed: read the backlog again after the last message sent
	stepGiveUp             // overtaken too many times in a row: end as a slow consumer
)

func (s step) String() string {
	return [...]string{"live", "merge", "reread", "give up"}[s]
}

// nextStep decides the replay's next step from the buffer it just took and
// how many times in a row it was overtaken (overtakes); it returns the new
// count. Live traffic overtakes a replay when more than the buffer holds
// arrives while the replay sends: re-reading then costs the backlog a page
// per round, so a replay that cannot catch up after maxOvertakes rounds is
// ended rather than left re-reading forever.
func nextStep(buffered int, overflowed bool, overtakes, maxOvertakes int) (step, int) {
	switch {
	case overflowed && overtakes+1 >= maxOvertakes:
		return stepGiveUp, overtakes + 1
	case overflowed:
		return stepReread, overtakes + 1
	case buffered == 0:
		return stepLive, 0
	}
	return stepMerge, 0
}
