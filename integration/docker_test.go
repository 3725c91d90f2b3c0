package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// dockerfile is the Dockerfile as BuildKit's own parser reads it.
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
	lint     []string // BuildKit's build-check warnings
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	var d dockerfile
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, _ []parser.Range) {
		d.lint = append(d.lint, rule+": "+msg)
	}})
	if d.stages, d.metaArgs, err = instructions.Parse(ast.AST, lint); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// baseImages expands each stage's FROM with the global build arguments and
// buildArgs (--build-arg), as BuildKit does: each ARG's default may use the
// ones before it.
func (d dockerfile) baseImages(t *testing.T, buildArgs map[string]string) []string {
	t.Helper()
	lex := shell.NewLex('\\')
	var env []string
	getter := func() shell.EnvGetter { return shell.EnvsFromSlice(env) }
	for _, cmd := range d.metaArgs {
		for _, kv := range cmd.Args {
			v, given := buildArgs[kv.Key]
			if !given {
				if kv.Value == nil {
					continue
				}
				var err error
				if v, _, err = lex.ProcessWord(*kv.Value, getter()); err != nil {
					t.Fatalf("ARG %s: %v", kv.Key, err)
				}
			}
			env = append(env, kv.Key+"="+v)
		}
	}
	var images []string
	for _, st := range d.stages {
		image, _, err := lex.ProcessWord(st.BaseName, getter())
		if err != nil {
			t.Fatalf("FROM %s: %v", st.BaseName, err)
		}
		images = append(images, image)
	}
	return images
}

func commandsOf[C instructions.Command](st instructions.Stage) []C {
	var cs []C
	for _, c := range st.Commands {
		if c, ok := c.(C); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

// TestDockerfile checks the image's Dockerfile with BuildKit's parser (CI
// has no Docker engine): base images and the Go version as build arguments,
// a numeric non-root user, a HEALTHCHECK that runs the binary's own check,
// and a build command that builds, from what .dockerignore lets through,
// a static binary whose health check answers for a running gateway.
func TestDockerfile(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	d := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(d.lint) > 0 {
		t.Errorf("BuildKit's build checks warn:\n%s", strings.Join(d.lint, "\n"))
	}
	if len(d.stages) != 2 {
		t.Fatalf("%d stages, want two: the build and the runtime image", len(d.stages))
	}
	build, runtime := d.stages[0], d.stages[1]

	// Base images: build arguments with the documented defaults, each
	// used by its stage's FROM.
	for _, want := range []struct{ stage, raw string }{{build.BaseName, "${BUILD_IMAGE}"}, {runtime.BaseName, "${RUNTIME_IMAGE}"}} {
		if want.stage != want.raw {
			t.Errorf("FROM %s, want FROM %s: the base image is a build argument", want.stage, want.raw)
		}
	}
	if got, want := d.baseImages(t, nil), []string{"golang:1.26", "gcr.io/distroless/static-debian12:nonroot"}; !slices.Equal(got, want) {
		t.Errorf("default base images %q, want %q", got, want)
	}
	if got, want := d.baseImages(t, map[string]string{"GO_VERSION": "1.26.8"}), "golang:1.26.8"; got[0] != want {
		t.Errorf("--build-arg GO_VERSION=1.26.8 builds on %q, want %q", got[0], want)
	}
	mirror := map[string]string{"BUILD_IMAGE": "mirror.example/golang:1.26", "RUNTIME_IMAGE": "mirror.example/static:nonroot"}
	if got := d.baseImages(t, mirror); !slices.Equal(got, []string{mirror["BUILD_IMAGE"], mirror["RUNTIME_IMAGE"]}) {
		t.Errorf("with --build-arg BUILD_IMAGE and RUNTIME_IMAGE the stages use %q", got)
	}

	// The user: numeric (no /etc/passwd needed to tell it is not root).
	users := commandsOf[*instructions.UserCommand](runtime)
	if len(users) == 0 {
		t.Fatal("the runtime stage sets no USER")
	}
	user := users[len(users)-1].User
	uid, gid, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric, non-root uid", user)
	}
	if n, err := strconv.Atoi(gid); gid != "" && (err != nil || n == 0) {
		t.Errorf("USER %s: want a numeric, non-root gid", user)
	}

	// The binary: copied from the build stage's output to /tslm, the
	// entrypoint.
	runs := commandsOf[*instructions.RunCommand](build)
	var buildCmd string
	for _, r := range runs {
		if line := strings.Join(r.CmdLine, " "); strings.Contains(line, "go build") {
			buildCmd = line
		}
	}
	out := regexp.MustCompile(`\s-o\s+(\S+)`).FindStringSubmatch(buildCmd)
	if out == nil {
		t.Fatalf("no RUN ... go build -o <file> in the build stage (RUNs: %v)", runs)
	}
	copies := commandsOf[*instructions.CopyCommand](runtime)
	if len(copies) != 1 || copies[0].From != build.Name || !slices.Equal(copies[0].SourcePaths, []string{out[1]}) || copies[0].DestPath != "/tslm" {
		t.Errorf("runtime stage copies %+v, want COPY --from=%s %s /tslm", copies, build.Name, out[1])
	}
	entry := commandsOf[*instructions.EntrypointCommand](runtime)
	if len(entry) != 1 || entry[0].PrependShell || !slices.Equal(entry[0].CmdLine, []string{"/tslm"}) {
		t.Errorf("ENTRYPOINT %+v, want [\"/tslm\"] (exec form: the base has no shell)", entry)
	}

	// The health check: exec form (no shell in distroless), the binary's
	// own subcommand, and Docker's timeout longer than the subcommand's,
	// so that a slow gateway is reported with the subcommand's reason.
	checks := commandsOf[*instructions.HealthCheckCommand](runtime)
	if len(checks) != 1 {
		t.Fatalf("%d HEALTHCHECKs in the runtime stage, want one", len(checks))
	}
	health := checks[0].Health
	if len(health.Test) < 3 || health.Test[0] != "CMD" || health.Test[1] != "/tslm" || health.Test[2] != "healthcheck" {
		t.Fatalf("HEALTHCHECK %q, want CMD [\"/tslm\", \"healthcheck\", ...]", health.Test)
	}
	if health.Timeout <= 2*time.Second || health.Interval < health.Timeout || health.StartPeriod == 0 || health.Retries < 1 {
		t.Errorf("HEALTHCHECK interval %v, timeout %v, start period %v, retries %d: want a timeout over the subcommand's 2s, an interval at least that, a start period and retries",
			health.Interval, health.Timeout, health.StartPeriod, health.Retries)
	}

	var exposed []string
	for _, e := range commandsOf[*instructions.ExposeCommand](runtime) {
		exposed = append(exposed, e.Ports...)
	}
	if !slices.Contains(exposed, "8080") || !slices.Contains(exposed, "8081") {
		t.Errorf("EXPOSE %q, want 8080 and 8081", exposed)
	}
	labels := map[string]string{}
	for _, l := range commandsOf[*instructions.LabelCommand](runtime) {
		for _, kv := range l.Labels {
			labels[kv.Key] = kv.Value
		}
	}
	for _, key := range []string{"title", "description", "source", "version", "revision"} {
		if labels["org.opencontainers.image."+key] == "" {
			t.Errorf("no LABEL org.opencontainers.image.%s", key)
		}
	}

	// The build, as the image runs it: from a copy of the build context
	// that .dockerignore lets through, with the RUN's own command line.
	context := buildContext(t, root)
	bin := filepath.Join(t.TempDir(), "tslm")
	shellCmd := strings.Replace(buildCmd, out[0], " -o "+bin, 1)
	if !strings.Contains(shellCmd, "CGO_ENABLED=0") || !strings.Contains(shellCmd, "./cmd/tslm") {
		t.Errorf("build command %q, want a static (CGO_ENABLED=0) build of ./cmd/tslm", buildCmd)
	}
	cmd := exec.Command("/bin/sh", "-c", shellCmd)
	cmd.Dir = context
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command fails on the build context:\n%s\n%s", shellCmd, b)
	}
	if b, err := exec.Command("go", "version", "-m", bin).Output(); err != nil || !strings.Contains(string(b), "CGO_ENABLED=0") {
		t.Errorf("the built binary is not static: %v\n%s", err, b)
	}
	checkImageHealthcheck(t, bin, health.Test[1:])
}

// checkImageHealthcheck runs the built binary as the gateway, then its
// HEALTHCHECK command line, with the environment docker-compose.yml gives.
func checkImageHealthcheck(t *testing.T, bin string, argv []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	env := append(os.Environ(), "TSLM_PUBLIC_ADDRS=127.0.0.1:0", "TSLM_INTERNAL_ADDRS=127.0.0.1:"+port)
	gw := exec.Command(bin)
	gw.Env = env
	var gwLog bytes.Buffer
	gw.Stderr = &gwLog
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { gw.Wait(); close(exited) }()
	t.Cleanup(func() { gw.Process.Kill(); <-exited })

	check := func() (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		hc := exec.CommandContext(ctx, bin, argv[1:]...)
		hc.Env = env
		b, err := hc.CombinedOutput()
		return string(b), err
	}
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := check()
		if err == nil {
			if !strings.Contains(out, "/healthz: ok") {
				t.Errorf("healthcheck succeeded saying %q", out)
			}
			break
		}
		last = out
		select {
		case <-exited:
			t.Fatalf("the built gateway exited:\n%s", gwLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEALTHCHECK %q of the running gateway still fails after 20s: %s", argv, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gw.Process.Kill()
	<-exited
	out, err := check()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "nothing listens") {
		t.Errorf("HEALTHCHECK of a stopped gateway: %v, %q; want exit 1 and why", err, out)
	}
}

// buildContext copies root into a temporary directory, less what
// .dockerignore excludes, as "docker build" sends it, and checks that every
// file the build of ./cmd/tslm reads is in it.
func buildContext(t *testing.T, root string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	excluded := func(rel string) bool {
		ex, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			t.Fatalf(".dockerignore on %s: %v", rel, err)
		}
		return ex
	}

	// What the build reads: go.mod, go.sum, and every Go and embedded
	// file of the module's packages that cmd/tslm imports.
	needed := []string{"go.mod", "go.sum"}
	list := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cmd/tslm")
	list.Dir = root
	listed, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(listed)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		dir, err := filepath.Rel(root, fields[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range fields[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(dir, file)))
		}
	}
	if len(needed) < 20 || !slices.Contains(needed, "clients/js/src/tslm.js") {
		t.Fatalf("go list found only %q: the check would prove nothing", needed)
	}
	for _, file := range needed {
		if excluded(file) {
			t.Errorf(".dockerignore excludes %s, which the image's build reads", file)
		}
	}
	// Nothing that merely bloats the context or leaks the repository's
	// history goes in.
	for _, file := range []string{".git", "clients/js/node_modules/x", "integration/docker_test.go", "gateway/gateway_test.go"} {
		if !excluded(file) {
			t.Errorf(".dockerignore lets %s through", file)
		}
	}

	dst := t.TempDir()
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if excluded(filepath.ToSlash(rel)) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
