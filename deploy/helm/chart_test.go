package helm

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/tslm/tslm/config"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/envconfig"
)

// tokensVar is the variable the chart passes publicAuthTokens in.
const tokensVar = "TSLM_PUBLIC_AUTH_TOKENS"

// valueSet is a set of values the chart is rendered with, and what the
// rendering must then show.
type valueSet struct {
	name  string
	files []string // -f, relative to this package
	// existing are the Secrets the values name but the chart does not
	// make, as the operator would have made them: name → key → value.
	existing map[string]map[string]string

	replicas      int32 // 0: the HPA's
	redis         bool
	redisPorts    []int32 // the NetworkPolicy's Redis ports
	tokens        []string
	oidc          bool
	ingress       bool
	ingressTLS    bool
	hpa           bool
	pdb           bool
	networkPolicy bool
	// The drain: preStop sleep, TSLM_DRAIN_DELAY, TSLM_SHUTDOWN_GRACE.
	preStop, delay, grace int64
}

var valueSets = []valueSet{
	{
		name:  "defaults",
		redis: true, redisPorts: []int32{6379},
		hpa: true, pdb: true, networkPolicy: true,
		preStop: 5, delay: 0, grace: 10,
	},
	{
		name:  "production",
		files: []string{"testdata/production.yaml"},
		existing: map[string]map[string]string{"tslm-redis": {
			"url": "redis://:hunter2@10.20.30.1:26379/0?master_name=tslm&addr=10.20.30.2:26379&addr=10.20.30.3:26379",
		}},
		replicas: 3,
		redis:    true, redisPorts: []int32{6379, 26379},
		tokens: []string{"s3cret", "0ther-t0ken"},
		oidc:   true, ingress: true, ingressTLS: true,
		pdb: true, networkPolicy: true,
		preStop: 10, delay: 2, grace: 20,
	},
	{
		name:     "minimal",
		files:    []string{"testdata/minimal.yaml"},
		replicas: 1,
		preStop:  0, delay: 5, grace: 10,
	},
}

// TestChartLint runs "helm lint --strict" with each value set: helm's own
// checks of the chart, warnings included.
func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, valuesArgs(vs.files)...)
			if out, err := runHelm(t, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestChartRenders renders the chart with each value set, decodes every
// object strictly into its Kubernetes type, checks the deployment's shape,
// and loads the rendered config file and the container's variables with
// the gateway's own code, as cmd/tslm would at start.
func TestChartRenders(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out, err := render(t, valuesArgs(vs.files)...)
			if err != nil {
				t.Fatal(err)
			}
			o, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			checkObjects(t, vs, o)
		})
	}
}

// checkObjects checks one rendering. Each check says what a deployment
// that breaks it would suffer.
func checkObjects(t *testing.T, vs valueSet, o *objects) {
	t.Helper()
	counts := []struct {
		kind      string
		got, want int
	}{
		{"Deployment", len(o.deployments), 1},
		{"ConfigMap", len(o.configMaps), 1},
		{"Service", len(o.services), 2},
		{"Secret", len(o.secrets), b2i((vs.redis && vs.existing == nil) || len(vs.tokens) > 0)},
		{"Ingress", len(o.ingresses), b2i(vs.ingress)},
		{"HorizontalPodAutoscaler", len(o.hpas), b2i(vs.hpa)},
		{"PodDisruptionBudget", len(o.pdbs), b2i(vs.pdb)},
		{"NetworkPolicy", len(o.networkPolicies), b2i(vs.networkPolicy)},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%d %s objects, want %d", c.got, c.kind, c.want)
		}
	}
	if len(o.deployments) != 1 || len(o.configMaps) != 1 || len(o.services) != 2 {
		t.FailNow()
	}
	d := o.deployments[0]
	pod := d.Spec.Template
	c := checkPod(t, d)

	st := loadConfig(t, vs, o, c)
	g := st.Gateway.WithDefaults()

	// The listeners bind every interface of the pod, on the container's
	// ports, which the probes and the Services name.
	publicPort, internalPort := containerPort(t, c, "public"), containerPort(t, c, "internal")
	checkAddrs(t, "public", g.PublicAddrs, publicPort)
	checkAddrs(t, "internal", g.InternalAddrs, internalPort)

	if (g.RedisURL != "") != vs.redis {
		t.Errorf("TSLM_REDIS_URL = %q; the set wants Redis: %v", g.RedisURL, vs.redis)
	}
	if (g.OIDCIssuer != "") != vs.oidc {
		t.Errorf("OIDC issuer %q; the set wants SSO: %v", g.OIDCIssuer, vs.oidc)
	}
	checkDrain(t, vs, d, c, g)
	checkMemory(t, c, g)

	public, internal := checkServices(t, o, pod.Labels, publicPort, internalPort)
	checkIngress(t, vs, o, public, internal)
	checkScaling(t, vs, o, d)
	if len(o.networkPolicies) == 1 {
		checkNetworkPolicy(t, vs, o.networkPolicies[0], pod.Labels, publicPort, internalPort, g)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkPod checks the pod template and returns the gateway's container.
func checkPod(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	pod := d.Spec.Template
	if d.Spec.Selector == nil || !matches(d.Spec.Selector.MatchLabels, pod.Labels) || len(d.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("the Deployment's selector %v does not select its pods %v", d.Spec.Selector, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want the gateway alone", len(pod.Spec.Containers))
	}
	c := &pod.Spec.Containers[0]

	// Non-root, read-only, no capabilities, no API token.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("no security context")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser (the image's 65532)", psc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system is writable")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || (sc.Privileged != nil && *sc.Privileged) {
		t.Error("privilege escalation is not refused")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v: want ALL dropped, none added", sc.Capabilities)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("a service account token is mounted: the gateway never calls the Kubernetes API")
	}

	// Readiness on /readyz (503 while draining or while Redis is away),
	// liveness on /healthz, both on the internal listener, which closes
	// last during a drain.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s probe over HTTP", p.name)
			continue
		}
		if g := p.probe.HTTPGet; g.Path != p.path || resolvePort(t, c, g.Port) != containerPort(t, c, "internal") {
			t.Errorf("%s probe asks %s on port %s, want %s on the internal listener", p.name, g.Path, g.Port.String(), p.path)
		}
	}
	return c
}

// loadConfig loads the ConfigMap's file and the container's variables as
// cmd/tslm does, with the Secrets' values, and requires no error and no
// warning.
func loadConfig(t *testing.T, vs valueSet, o *objects, c *corev1.Container) envconfig.Settings {
	t.Helper()
	cm := o.configMaps[0]
	file, ok := cm.Data["tslm.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s holds %v, not tslm.toml", cm.Name, cm.Data)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = secretRef(t, vs, o, e.ValueFrom.SecretKeyRef)
		default:
			t.Errorf("variable %s comes from %+v: want a value or a Secret", e.Name, e.ValueFrom)
		}
	}
	// No secret in the ConfigMap: the Redis URL and tokens come from Secrets.
	for _, name := range []string{"TSLM_REDIS_URL", tokensVar} {
		for _, e := range c.Env {
			if e.Name == name && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Errorf("%s is a plain value, not from a Secret", name)
			}
		}
	}
	for _, secret := range append([]string{env["TSLM_REDIS_URL"]}, vs.tokens...) {
		if secret != "" && strings.Contains(file, secret) {
			t.Errorf("the ConfigMap holds the secret %q", secret)
		}
	}
	if got := strings.Join(vs.tokens, ","); env[tokensVar] != got {
		t.Errorf("%s = %q, want %q", tokensVar, env[tokensVar], got)
	}

	// TSLM_CONFIG names the file where the ConfigMap is mounted.
	mountedAt := ""
	for _, v := range d(o).Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || len(v.ConfigMap.Items) > 0 {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && m.SubPath == "" {
				mountedAt = filepath.Join(m.MountPath, "tslm.toml")
			}
		}
	}
	if mountedAt == "" || env["TSLM_CONFIG"] != mountedAt {
		t.Errorf("TSLM_CONFIG = %q; the ConfigMap's file is at %q", env["TSLM_CONFIG"], mountedAt)
	}

	path := filepath.Join(t.TempDir(), "tslm.toml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	env["TSLM_CONFIG"] = path
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("the gateway refuses the chart's config file:\n%v\n%s", err, file)
	}
	if len(f.Warnings) > 0 {
		t.Errorf("the chart's config file warns: %q\n%s", f.Warnings, file)
	}
	st, err := envconfig.LoadOver(f.Config, env)
	if err != nil {
		t.Fatalf("the gateway refuses the chart's variables over its file:\n%v\nvariables: %v", err, env)
	}
	if len(st.Warnings) > 0 {
		t.Errorf("the chart's variables warn: %q", st.Warnings)
	}
	return st
}

func d(o *objects) *appsv1.Deployment { return o.deployments[0] }

// secretRef is the value a secretKeyRef reads: from a Secret the chart
// rendered, or one the value set says the operator made.
func secretRef(t *testing.T, vs valueSet, o *objects, ref *corev1.SecretKeySelector) string {
	t.Helper()
	for _, s := range o.secrets {
		if s.Name == ref.Name {
			v, ok := secretValue(s, ref.Key)
			if !ok {
				t.Errorf("Secret %s has no key %s", ref.Name, ref.Key)
			}
			return v
		}
	}
	if v, ok := vs.existing[ref.Name][ref.Key]; ok {
		return v
	}
	t.Errorf("a variable reads Secret %s key %s, which neither the chart renders nor the values name", ref.Name, ref.Key)
	return ""
}

// checkAddrs checks that a listener binds one address, on every interface,
// on the container's port.
func checkAddrs(t *testing.T, name string, addrs []string, port int32) {
	t.Helper()
	if len(addrs) != 1 {
		t.Errorf("the %s listener binds %q, want one address", name, addrs)
		return
	}
	host, p, err := net.SplitHostPort(addrs[0])
	if err != nil || p != strconv.Itoa(int(port)) {
		t.Errorf("the %s listener binds %q, want port %d (the container's)", name, addrs[0], port)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("the %s listener binds %q: the probes and Services reach the pod's own address, so it must bind every interface", name, addrs[0])
	}
}

// checkMemory checks that the container's memory limit holds what the
// gateway lets itself queue, so that a burst closes slow clients (4001)
// rather than getting the pod killed.
func checkMemory(t *testing.T, c *corev1.Container, g gateway.Config) {
	t.Helper()
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return
	}
	if held := g.SendQueueBudget + g.ReplayBytes; limit.Value() <= held {
		t.Errorf("memory limit %s is below the %d bytes TSLM_SEND_QUEUE_BUDGET and TSLM_REPLAY_BYTES allow", limit.String(), held)
	}
}

// redisPorts are the ports TSLM_REDIS_URL names: its host's, and each
// addr= of a Sentinel or Cluster URL.
func redisPorts(t *testing.T, raw string) []int32 {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("TSLM_REDIS_URL: %v", err)
	}
	hosts := append(strings.Split(u.Host, ","), u.Query()["addr"]...)
	var ports []int32
	for _, h := range hosts {
		_, p, err := net.SplitHostPort(h)
		if err != nil {
			p = "6379"
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("TSLM_REDIS_URL %q: port %q", raw, p)
		}
		if !slices.Contains(ports, int32(n)) {
			ports = append(ports, int32(n))
		}
	}
	return ports
}

// TestChartRefuses holds the chart to refusing, at render time and naming
// the value (by values.schema.json or the templates' checks), settings that would otherwise show only as a pod that never
// gets ready, or a NetworkPolicy that lets the pods connect anywhere.
func TestChartRefuses(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"in-memory backlog with several replicas", []string{"--set", "redis.enabled=false"}, "redis.enabled=false"},
		{"no Redis URL", []string{"--set", "redis.url="}, "needs redis.url or redis.existingSecret"},
		{"listeners on one port", []string{"--set", "ports.internal=8080"}, "ports.public and ports.internal must differ"},
		{"listeners on loopback", []string{"--set", "listenIP=127.0.0.1"}, "listenIP"},
		{"a listener's port in config", []string{"--set", "config.public.port=9000"}, `"port" is the chart's to set`},
		{"tokens in the ConfigMap", []string{"--set", "config.public.auth_tokens={a}"}, `"auth_tokens" is the chart's to set`},
		{"a table as a listener key", []string{"--set", "config.public.max_connections.x=1"}, "/config/public/max_connections"},
		{"a listener key of the other listener", []string{"--set", "config.internal.max_connections_per_ip=5"}, "'max_connections_per_ip' not allowed"},
		{"a misspelt value", []string{"--set", "redis.existingsecret=mine"}, "'existingsecret' not allowed"},
		{"a misspelt listener key", []string{"--set", "config.public.max_conections=5"}, "'max_conections' not allowed"},
		{"an unknown log format", []string{"--set", "log.format=xml"}, "/log/format"},
		{"a token with a comma", []string{"--set", "publicAuthTokens.values={a\\,b}"}, "holds no comma"},
		{"Redis egress anywhere", []string{"--set", "networkPolicy.egress.redis.to=null"}, "networkPolicy.egress.redis needs ports and to"},
		{"provider egress anywhere", []string{"--set", "oidc.issuer=https://sso.example.com", "--set", "networkPolicy.egress.identityProvider.to=null"}, "networkPolicy.egress.identityProvider needs"},
		{"no DNS", []string{"--set", "networkPolicy.egress.dns.ports=null"}, "networkPolicy.egress.dns needs"},
		{"internal port shut", []string{"--set", "networkPolicy.ingress.internal.from=null"}, "networkPolicy.ingress.internal.from is empty"},
		{"no shutdown grace", []string{"--set", "drain.shutdownGraceSeconds=0"}, "/drain/shutdownGraceSeconds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := render(t, c.args...)
			if err == nil {
				t.Fatalf("rendered with %v:\n%s", c.args, out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v\nwant it to say %q", err, c.want)
			}
		})
	}
}
