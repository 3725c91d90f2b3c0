package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestReadmeQuickStart runs the tslmctl commands of README.md's Quick
// start, as written but pointed at a test gateway, and checks the
// subscriber prints the data the README shows.
func TestReadmeQuickStart(t *testing.T) {
	doc, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no Quick start")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	g := startGateway(t)
	var subscribe []string
	var ran int
	var wantData []string
	jsonBlocks := 0
	inBlock := ""
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "```") {
			if inBlock == "" {
				inBlock = strings.TrimPrefix(line, "```")
				if inBlock == "json" {
					jsonBlocks++
				}
			} else {
				inBlock = ""
			}
			continue
		}
		// The first json block is tslmctl's output (tslmcat's frames,
		// with their "type", come later).
		if inBlock == "json" && jsonBlocks == 1 {
			var m struct{ Data json.RawMessage }
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("README's output line %q: %v", line, err)
			}
			wantData = append(wantData, string(m.Data))
		}
		if inBlock != "sh" || !strings.Contains(line, "go run ./cmd/tslmctl ") {
			continue
		}
		stdin := ""
		if left, right, piped := strings.Cut(line, "|"); piped {
			echo := shellWords(t, left)
			if len(echo) != 2 || echo[0] != "echo" {
				t.Fatalf("README pipes %q into tslmctl; the test knows only echo", left)
			}
			stdin, line = echo[1]+"\n", right
		}
		_, cmdline, _ := strings.Cut(line, "go run ./cmd/tslmctl ")
		args := shellWords(t, cmdline)
		switch args[0] {
		case "subscribe":
			subscribe = args // run last: it waits for the messages
			continue
		case "channel":
			args = append(args, "--api", g.api)
		default:
			args = append(args, "--url", g.internal)
		}
		tslmctl(t, stdin, args...).want(t, 0, "*")
		ran++
	}
	if subscribe == nil || ran < 2 || len(wantData) != 2 {
		t.Fatalf("README's Quick start: subscribe %v, %d other tslmctl commands, output %v: not the walk-through this test knows", subscribe, ran, wantData)
	}
	r := tslmctl(t, "", append(subscribe, "--url", g.public, "--count", "2")...)
	r.want(t, 0, "*")
	var got []string
	for line := range strings.Lines(r.stdout) {
		var m struct {
			Channel string
			Data    json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.Channel != "prices" {
			t.Fatalf("subscriber printed %q", line)
		}
		got = append(got, string(m.Data))
	}
	if strings.Join(got, " ") != strings.Join(wantData, " ") {
		t.Fatalf("subscriber printed data %v; README shows %v", got, wantData)
	}
}

// shellWords splits s as a POSIX shell would, for the quoting the README
// uses: single quotes and plain words.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '"' || r == '\\' || r == '$' || r == '`':
			t.Fatalf("README command %q uses shell syntax this test does not parse", s)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
