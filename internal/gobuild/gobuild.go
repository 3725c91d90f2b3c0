// Package gobuild builds a package of this module into a binary once per
// test process, for tests that run the real program as users do, and
// removes it when the tests are over.
package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// Binary is one package's binary, built on first use.
type Binary struct {
	pkg   string
	env   []string
	flags []string

	once sync.Once
	dir  string
	path string
	err  error
}

// New describes the binary of pkg (an import path or a relative directory),
// built with the go command's flags and env (KEY=VALUE entries added to
// the process's environment).
func New(pkg string, env []string, flags ...string) *Binary {
	return &Binary{pkg: pkg, env: env, flags: flags}
}

// Path builds the binary, the first time, and returns its path; a failed
// build fails t with the compiler's output.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(b.build)
	if b.err != nil {
		t.Fatalf("building %s: %v", b.pkg, b.err)
	}
	return b.path
}

func (b *Binary) build() {
	if b.dir, b.err = os.MkdirTemp("", "tslm-gobuild"); b.err != nil {
		return
	}
	b.path = filepath.Join(b.dir, path.Base(filepath.ToSlash(b.pkg)))
	if b.path == filepath.Join(b.dir, ".") {
		b.path = filepath.Join(b.dir, "bin")
	}
	args := append([]string{"build"}, b.flags...)
	cmd := exec.Command("go", append(args, "-o", b.path, b.pkg)...)
	cmd.Env = append(os.Environ(), b.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.err = fmt.Errorf("%v\n%s", err, out)
	}
}

// Remove deletes the binary, if it was built. TestMain calls it once every
// test, and so every process started from the binary, is done.
func (b *Binary) Remove() error {
	if b.dir == "" {
		return nil
	}
	return os.RemoveAll(b.dir)
}

// Main runs the tests of m and then removes bins, failing the run if one
// cannot be removed: the body of a TestMain.
func Main(m *testing.M, bins ...*Binary) {
	code := m.Run()
	for _, b := range bins {
		if err := b.Remove(); err != nil {
			fmt.Fprintf(os.Stderr, "removing the test binary of %s: %v\n", b.pkg, err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}
