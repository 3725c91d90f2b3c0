package backlog

import (
	"errors"
	"strconv"
	"strings"
)

// ID identifies a message within a channel. It has the shape of a Redis
// Stream entry ID ("<ms>-<seq>") so that both backlogs hand out the same
// identifiers and a client never has to know which one served it.
type ID struct {
	Ms  uint64
	Seq uint64
}

// Zero is the ID that sorts before every message: "0-0".
var Zero = ID{}

// ErrBadID is returned by ParseID for anything that is not "<ms>-<seq>".
var ErrBadID = errors.New("backlog: malformed message id")

// ParseID parses the canonical "<ms>-<seq>" form. Unlike Redis it refuses the
// bare "<ms>" shorthand: a client resumes from an ID it was given, and every
// ID the gateway gives out has both parts.
func ParseID(s string) (ID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok || msPart == "" || seqPart == "" || len(s) > 41 {
		return ID{}, ErrBadID
	}
	ms, err := parseDecimal(msPart)
	if err != nil {
		return ID{}, ErrBadID
	}
	seq, err := parseDecimal(seqPart)
	if err != nil {
		return ID{}, ErrBadID
	}
	return ID{Ms: ms, Seq: seq}, nil
}

// parseDecimal refuses signs, spaces and leading zeros that strconv would
// accept, so that every ID has exactly one spelling.
func parseDecimal(s string) (uint64, error) {
	if len(s) > 1 && s[0] == '0' {
		return 0, ErrBadID
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadID
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// String returns the canonical "<ms>-<seq>" form.
func (id ID) String() string {
	return string(id.AppendTo(make([]byte, 0, 24)))
}

// AppendTo appends the canonical form to b; the hot path encodes IDs into
// frames without an intermediate string.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// Compare returns -1, 0 or +1 as id sorts before, equal to or after other.
func (id ID) Compare(other ID) int {
	switch {
	case id.Ms < other.Ms:
		return -1
	case id.Ms > other.Ms:
		return 1
	case id.Seq < other.Seq:
		return -1
	case id.Seq > other.Seq:
		return 1
	}
	return 0
}

// Less reports whether id sorts before other.
func (id ID) Less(other ID) bool { return id.Compare(other) < 0 }

// IsZero reports whether id is "0-0".
func (id ID) IsZero() bool { return id == Zero }

// Next returns the smallest ID after id, the exclusive lower bound of a range.
func (id ID) Next() ID {
	if id.Seq == ^uint64(0) {
		return ID{Ms: id.Ms + 1}
	}
	return ID{Ms: id.Ms, Seq: id.Seq + 1}
}

// Prev returns the greatest ID before id, so that Range after id.Prev()
// starts with id itself; Zero has no predecessor and stays Zero.
func (id ID) Prev() ID {
	switch {
	case id.Seq > 0:
		return ID{Ms: id.Ms, Seq: id.Seq - 1}
	case id.Ms > 0:
		return ID{Ms: id.Ms - 1, Seq: ^uint64(0)}
	}
	return Zero
}
