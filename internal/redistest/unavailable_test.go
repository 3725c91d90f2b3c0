package redistest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestUnavailableVerdict(t *testing.T) {
	for _, c := range []struct {
		name      string
		ci, short bool
		fail      bool
		hint      string
	}{
		{"plain go test", false, false, true, "or run go test -short to skip them"},
		{"go test -short", false, true, false, "(skipped: -short)"},
		{"CI", true, false, true, "CI=true: failing instead of skipping"},
		{"CI ignores -short", true, true, true, "CI=true: failing instead of skipping"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, fail := unavailableVerdict(c.ci, c.short, "no backend")
			if fail != c.fail {
				t.Errorf("fail = %v, want %v", fail, c.fail)
			}
			for _, want := range []string{"redis-backed tests NOT run: no backend", "install redis-server or start Docker", c.hint} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
		})
	}
}

// TestUnavailableReachesGoTest runs this test binary again as go test would,
// with a test that finds no Redis, and checks what go test gets to show:
// go test ./... prints a package's output only when its binary fails.
func TestUnavailableReachesGoTest(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") != "" {
		return // only TestUnavailableChild runs in the child
	}
	for _, c := range []struct {
		name     string
		env      []string
		args     []string
		wantFail bool
	}{
		{"plain", nil, nil, true},
		{"short", nil, []string{"-test.short"}, false},
		{"CI short", []string{"CI=true"}, []string{"-test.short"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-test.run=^TestUnavailableChild$", "-test.v"}, c.args...)
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(withoutCI(os.Environ()), "REDISTEST_CHILD=1")
			cmd.Env = append(cmd.Env, c.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if failed := errors.As(err, &exit); failed != c.wantFail || (err != nil && !failed) {
				t.Fatalf("child: %v, want failure %v; output:\n%s", err, c.wantFail, out)
			}
			if !strings.Contains(string(out), "redis-backed tests NOT run") {
				t.Errorf("child output lacks the message:\n%s", out)
			}
		})
	}
}

// TestUnavailableChild is the child of TestUnavailableReachesGoTest.
func TestUnavailableChild(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") != "1" {
		t.Skip("run by TestUnavailableReachesGoTest")
	}
	unavailable(t, "no backend (simulated)")
}

// TestSetsNeedBinaries: a Cluster or Sentinel set without redis-server on
// PATH fails under CI and is skipped under -short, as Start is, rather
// than falling back to a container.
func TestSetsNeedBinaries(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") != "" {
		return
	}
	for _, set := range []string{"cluster", "sentinel"} {
		for _, c := range []struct {
			name     string
			env      []string
			args     []string
			wantFail bool
		}{
			{"CI", []string{"CI=true"}, nil, true},
			{"short", nil, []string{"-test.short"}, false},
		} {
			t.Run(set+" "+c.name, func(t *testing.T) {
				args := append([]string{"-test.run=^TestSetChild$", "-test.v"}, c.args...)
				cmd := exec.Command(os.Args[0], args...)
				cmd.Env = append(withoutCI(withoutPath(os.Environ())), "PATH=", "REDISTEST_CHILD="+set)
				cmd.Env = append(cmd.Env, c.env...)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if failed := errors.As(err, &exit); failed != c.wantFail || (err != nil && !failed) {
					t.Fatalf("child: %v, want failure %v; output:\n%s", err, c.wantFail, out)
				}
				if !strings.Contains(string(out), "redis-backed tests NOT run") || !strings.Contains(string(out), "not on PATH") {
					t.Errorf("child output lacks the message:\n%s", out)
				}
			})
		}
	}
}

// TestSetChild is the child of TestSetsNeedBinaries.
func TestSetChild(t *testing.T) {
	switch os.Getenv("REDISTEST_CHILD") {
	case "cluster":
		StartCluster(t, ClusterOptions{})
	case "sentinel":
		StartSentinel(t, SentinelOptions{})
	default:
		t.Skip("run by TestSetsNeedBinaries")
	}
	t.Error("started without binaries on PATH")
}

func withoutPath(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return out
}

func withoutCI(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CI=") {
			out = append(out, kv)
		}
	}
	return out
}
