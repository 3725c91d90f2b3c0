package broker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestEveryCodeDocumented holds docs/protocol.md's error table to the
// codes this package defines: a code added here without its row there
// (or a row left for a code gone) fails. CodeCanceled is never sent.
func TestEveryCodeDocumented(t *testing.T) {
	file, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || spec.Type == nil || len(spec.Values) != 1 {
			return true
		}
		if id, ok := spec.Type.(*ast.Ident); !ok || id.Name != "Code" {
			return true
		}
		if lit, ok := spec.Values[0].(*ast.BasicLit); ok {
			v, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			defined[v] = true
		}
		return true
	})
	if len(defined) < 10 {
		t.Fatalf("found %d codes in codes.go: the parse went wrong", len(defined))
	}
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "| code | meaning | what the client does |")
	if !ok {
		t.Fatal("docs/protocol.md has no error code table")
	}
	documented := map[string]bool{}
	for line := range strings.Lines(strings.TrimLeft(table, "\n")) {
		if !strings.HasPrefix(line, "|") {
			break // the end of the table
		}
		if !strings.HasPrefix(line, "| `") {
			continue // the separator row
		}
		code, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
		documented[code] = true
	}
	for code := range defined {
		if !documented[code] && code != "canceled" {
			t.Errorf("code %q is not in docs/protocol.md's error table", code)
		}
	}
	for code := range documented {
		if !defined[code] {
			t.Errorf("docs/protocol.md documents code %q, which broker/codes.go does not define", code)
		}
	}
}
