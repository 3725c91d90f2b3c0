package ws

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestCloseCodesDocumented holds docs/protocol.md's close code table to
// closeTable: every code the server sends has its row, and its range says
// what it means (4000-4499: reconnect and resume; 4500-4999: not without
// something changing).
func TestCloseCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Close codes\n")
	if !ok {
		t.Fatal("docs/protocol.md has no Close codes section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[int]string{}
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		if code, err := strconv.Atoi(cell); err == nil {
			rows[code] = line
		}
	}
	for r := range closeTable {
		reason := CloseReason(r)
		row, ok := rows[reason.Code()]
		switch {
		case !ok:
			t.Errorf("close code %d (%q) has no row in docs/protocol.md", reason.Code(), reason)
		case reason != CloseTryLater && strings.Contains(row, "not sent"):
			t.Errorf("close code %d is sent, but its row says otherwise: %s", reason.Code(), row)
		}
		if c := reason.Code(); c >= 4000 && c < 4500 && !strings.Contains(reason.String(), "reconnect") {
			t.Errorf("close %d %q: codes 4000-4499 tell the client to reconnect and resume", c, reason)
		}
	}
}
