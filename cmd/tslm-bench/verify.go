package main

import (
	"strconv"
	"strings"
)

// stream checks what one subscriber received on one channel: every
// message once, in order, none missing. Each payload names its publisher
// and that publisher's sequence number on the channel (1, 2, 3…), so a
// loss or a repeat is seen at once, whatever the other publishers do; the
// gateway's IDs must increase strictly. A stream belongs to its
// subscriber's reader goroutine.
type stream struct {
	lastMS, lastSeq uint64 // the last message's ID
	haveID          bool
	last            []uint64 // per publisher: the highest sequence number received
	skipped         uint64   // sequence numbers jumped over
	accepted        uint64   // messages that advanced their publisher's sequence

	duplicates uint64 // a sequence number not above its publisher's last: a repeat, or a message late
	misordered uint64 // an ID not above the previous one
	malformed  uint64 // an ID or payload that cannot be read
	gaps       uint64 // gap frames
}

func newStream(publishers int) *stream { return &stream{last: make([]uint64, publishers)} }

// message records one message frame; it reports whether the message was
// new and in order.
func (s *stream) message(id string, publisher int, seq uint64) bool {
	ms, sq, ok := parseID(id)
	if !ok || publisher < 0 || publisher >= len(s.last) || seq == 0 {
		s.malformed++
		return false
	}
	if s.haveID && (ms < s.lastMS || ms == s.lastMS && sq <= s.lastSeq) {
		s.misordered++
	}
	s.lastMS, s.lastSeq, s.haveID = ms, sq, true
	prev := s.last[publisher]
	if seq <= prev {
		s.duplicates++
		return false
	}
	s.skipped += seq - prev - 1
	s.last[publisher] = seq
	s.accepted++
	return true
}

// lastID is the last message's ID, "0-0" before any: where a resume
// starts.
func (s *stream) lastID() string {
	if !s.haveID {
		return "0-0"
	}
	return strconv.FormatUint(s.lastMS, 10) + "-" + strconv.FormatUint(s.lastSeq, 10)
}

// lost is what never arrived of the messages the publishers had
// acknowledged: ackedTo[p] is publisher p's highest acknowledged sequence
// number on the channel.
func (s *stream) lost(ackedTo []uint64) uint64 {
	lost := s.skipped
	for p, want := range ackedTo {
		if want > s.last[p] {
			lost += want - s.last[p]
		}
	}
	return lost
}

// parseID reads a message ID <ms>-<seq>.
func parseID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// Verdict is the correctness of a run: OK only when every subscriber
// received every acknowledged message of its channel once and in order.
type Verdict struct {
	OK bool `json:"ok"`
	// Lost counts deliveries that never came: per subscriber, messages
	// acknowledged to a publisher and not received. With -allow-gaps,
	// those after a gap frame count in LostAfterGap instead.
	Lost         uint64 `json:"lost"`
	LostAfterGap uint64 `json:"lost_after_gap,omitempty"`
	// Duplicates counts messages received again, or after a later one of
	// the same publisher.
	Duplicates uint64 `json:"duplicates"`
	// MisorderedIDs counts IDs not above the previous one of the channel.
	MisorderedIDs uint64 `json:"misordered_ids"`
	Gaps          uint64 `json:"gaps"`
	// Disconnects counts subscribers whose connection ended before the
	// run did; Errors, frames the subscribers did not expect (error,
	// deleted, unreadable).
	Disconnects   uint64 `json:"disconnects"`
	Errors        uint64 `json:"errors"`
	PublishErrors uint64 `json:"publish_errors"`
	// Request/reply (-scenario reqreply): Lost counts requests never
	// answered, Duplicates a second answer to one; WrongReplies answers
	// that name no request of the requester, come before their ack, or
	// carry another request's reply; Timeouts and Refused, requests
	// answered with a timeout error, or refused rather than acknowledged.
	WrongReplies uint64 `json:"wrong_replies,omitempty"`
	Timeouts     uint64 `json:"timeouts,omitempty"`
	Refused      uint64 `json:"refused,omitempty"`
	// NotResumed counts resubscribes (-scenario storm) whose ack said
	// resumed:false: the gateway could not prove that nothing was lost.
	NotResumed uint64 `json:"not_resumed,omitempty"`
	// Problems says, for humans, what went wrong (a few examples).
	Problems []string `json:"problems,omitempty"`
}

// add folds one subscriber's stream into v; ackedTo is as for lost.
func (v *Verdict) add(s *stream, ackedTo []uint64, allowGaps bool) {
	lost := s.lost(ackedTo)
	if allowGaps && s.gaps > 0 {
		v.LostAfterGap += lost
	} else {
		v.Lost += lost
	}
	v.Duplicates += s.duplicates
	v.MisorderedIDs += s.misordered
	v.Errors += s.malformed
	v.Gaps += s.gaps
}

// problem keeps a few examples of what went wrong.
func (v *Verdict) problem(msg string) {
	if len(v.Problems) < 10 {
		v.Problems = append(v.Problems, msg)
	}
}

// decide sets OK.
func (v *Verdict) decide(allowGaps bool) {
	v.OK = v.Lost == 0 && v.Duplicates == 0 && v.MisorderedIDs == 0 && v.Disconnects == 0 &&
		v.Errors == 0 && v.PublishErrors == 0 && v.WrongReplies == 0 && v.Timeouts == 0 && v.Refused == 0 && (allowGaps || v.Gaps == 0 && v.NotResumed == 0)
}
