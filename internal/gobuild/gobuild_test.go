package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestBuildRunRemove builds a real command of this module once, runs it,
// and removes it.
func TestBuildRunRemove(t *testing.T) {
	b := New("github.com/tslm/tslm/cmd/tslm", []string{"CGO_ENABLED=0"}, "-trimpath")
	p := b.Path(t)
	if again := b.Path(t); again != p {
		t.Fatalf("second Path %q, want the first build's %q", again, p)
	}
	out, err := exec.Command(p, "healthcheck", "-h").CombinedOutput()
	if !strings.Contains(string(out), "healthcheck") {
		t.Errorf("the built binary answered %q (%v), want its healthcheck usage", out, err)
	}
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("the binary is still there after Remove: %v", err)
	}
}

// TestBuildFailureSaysWhy: a package that does not build fails the test
// with a message naming it and the go command's output.
func TestBuildFailureSaysWhy(t *testing.T) {
	b := New("github.com/tslm/tslm/no/such/package", nil)
	rec := &recorder{TB: t}
	func() {
		defer func() { recover() }() // recorder.Fatalf stops Path as t.Fatalf would
		b.Path(rec)
	}()
	if !strings.Contains(rec.msg, "building github.com/tslm/tslm/no/such/package") || !strings.Contains(rec.msg, "is not in std") && !strings.Contains(rec.msg, "cannot find") && !strings.Contains(rec.msg, "no required module") {
		t.Errorf("failure message %q does not name the package and say why", rec.msg)
	}
}

// recorder stands in for a test, to see what Path fails it with.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic("fatal")
}
