package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse holds parse to answering any bytes with a File or *Errors,
// never a panic: the index walks the parser's tree by hand.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(exampleFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("[listener.private]\nip = \"127.0.0.1\"\nport = 8081\ndefault_endpoint_permissions = [\"CreateChannel\"]\n"))
	f.Add([]byte("a.b.c = [[1, {x = [2]}], {}]\n[[t.u]]\n[t.u.v]\nw = 1\n[[t.u]]\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		_, err := parse("fuzz.toml", doc)
		if err == nil {
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v (%T) is no *Error", err, err)
		}
	})
}
