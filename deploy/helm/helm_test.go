package helm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

const (
	// helmModule is the helm the tests render with, built from the module
	// proxy: helm is not a dependency of this module.
	// .ci/run builds the same one first, so that the tests link it from
	// the build cache.
	helmModule = "helm.sh/helm/v4/cmd/helm@v4.3.2"
	// chartDir is the chart, relative to this package.
	chartDir = "tslm"
	// kubeVersion is the oldest Kubernetes the chart's defaults run on:
	// the preStop "sleep" action is on by default from 1.30.
	kubeVersion = "1.30.0"
)

// helmTool is the helm binary, built once per test process.
var helmTool struct {
	once sync.Once
	dir  string // the binary, and helm's own config and cache
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helmTool.dir != "" {
		os.RemoveAll(helmTool.dir)
	}
	os.Exit(code)
}

// needHelm returns the helm binary. When it cannot be built the test
// fails under CI=true and is skipped elsewhere, saying why.
func needHelm(t *testing.T) string {
	t.Helper()
	helmTool.once.Do(buildHelm)
	if helmTool.err != nil {
		msg := fmt.Sprintf("cannot build %s: %v", helmModule, helmTool.err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true: failing instead of skipping")
		}
		t.Skip(msg + "; skipped: the chart tests need the Go module proxy, or helm's modules in the module cache")
	}
	return helmTool.path
}

// buildHelm builds helm with "go run", which keeps the linked binary in
// the build cache (a second build takes seconds, where "go install" links
// again), and copies it out through -exec so that each helm command does
// not ask the go command again.
func buildHelm() {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "tslm-helm-")
	if err != nil {
		helmTool.err = err
		return
	}
	helmTool.dir = dir
	path := filepath.Join(dir, "helm")
	cmd := exec.Command(goCmd, "run", "-exec", "cp", helmModule, path)
	if out, err := cmd.CombinedOutput(); err != nil {
		helmTool.err = fmt.Errorf("go run: %v\n%s", err, out)
		return
	}
	helmTool.path = path
}

// runHelm runs helm with its config, cache and data in the test's own
// directory, away from the user's repositories and plugins. A failure
// returns helm's stderr in the error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	helm := needHelm(t)
	cmd := exec.Command(helm, args...)
	home := filepath.Join(helmTool.dir, "home")
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// valuesArgs turns values files (relative to this package) into helm's -f
// flags.
func valuesArgs(files []string) []string {
	var args []string
	for _, f := range files {
		args = append(args, "-f", f)
	}
	return args
}

// render runs "helm template" on the chart with these values, as release
// "tslm" in namespace "edge".
func render(t *testing.T, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"template", "tslm", chartDir, "--namespace", "edge", "--kube-version", kubeVersion}, extra...)
	return runHelm(t, args...)
}

// TestCIBuildsThisHelm holds .ci/run to building the helm these tests
// use, so that they find it in the build cache instead of building another
// while the rest of the suite runs.
func TestCIBuildsThisHelm(t *testing.T) {
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "helm_module="+helmModule+"\n") || !strings.Contains(string(ci), `go run "$helm_module" lint`) {
		t.Errorf(".ci/run does not build and run %s before the tests: CI would build helm inside them", helmModule)
	}
	if !strings.Contains(string(ci), "--kube-version "+kubeVersion) {
		t.Errorf(".ci/run does not lint for Kubernetes %s, as the tests do", kubeVersion)
	}
}
