package helm

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tslm/tslm/gateway"
)

// matches tells whether labels has every key and value of selector.
func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort is the number of the container's port of that name.
func containerPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				t.Errorf("container port %s is %s, want TCP", name, p.Protocol)
			}
			return p.ContainerPort
		}
	}
	t.Fatalf("the container has no port named %q: %+v", name, c.Ports)
	return 0
}

// resolvePort is the container port a named or numbered port means.
func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.String {
		return containerPort(t, c, p.StrVal)
	}
	return p.IntVal
}

// checkDrain checks that a stopping pod is out of the balancers before its
// clients are told 1001, and that the kubelet's SIGKILL comes only after
// the drain.
func checkDrain(t *testing.T, vs valueSet, dep *appsv1.Deployment, c *corev1.Container, g gateway.Config) {
	t.Helper()
	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		h := c.Lifecycle.PreStop
		if h.Sleep == nil || h.Exec != nil || h.HTTPGet != nil || h.TCPSocket != nil {
			t.Errorf("preStop %+v: want the sleep action (the image has no shell)", h)
		} else {
			preStop = h.Sleep.Seconds
		}
	}
	if preStop != vs.preStop || g.DrainDelay != time.Duration(vs.delay)*time.Second || g.ShutdownGrace != time.Duration(vs.grace)*time.Second {
		t.Errorf("preStop %ds, TSLM_DRAIN_DELAY %v, TSLM_SHUTDOWN_GRACE %v; want %ds, %ds, %ds",
			preStop, g.DrainDelay, g.ShutdownGrace, vs.preStop, vs.delay, vs.grace)
	}
	// Between the signal to stop and the 1001s: the preStop sleep (the
	// endpoints' removal reaches the Ingress controller and kube-proxy),
	// then the gateway's own delay (/readyz at 503).
	if preStop == 0 && g.DrainDelay == 0 {
		t.Error("no preStop sleep and no TSLM_DRAIN_DELAY: clients told to leave would be sent back to the same pod")
	}
	grace := int64(30) // Kubernetes' default
	if p := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; p != nil {
		grace = *p
	}
	need := time.Duration(preStop)*time.Second + g.DrainDelay + g.ShutdownGrace
	if time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d is not above preStop + TSLM_DRAIN_DELAY + TSLM_SHUTDOWN_GRACE = %v: SIGKILL would cut the drain short", grace, need)
	}
}

// checkServices checks the two Services: each selects the pods and
// reaches one listener; the internal one is ClusterIP only.
func checkServices(t *testing.T, o *objects, podLabels map[string]string, publicPort, internalPort int32) (public, internal *corev1.Service) {
	t.Helper()
	c := &o.deployments[0].Spec.Template.Spec.Containers[0]
	for _, s := range o.services {
		if len(s.Spec.Selector) == 0 || !matches(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s selects %v, not the gateway's pods %v", s.Name, s.Spec.Selector, podLabels)
		}
		if len(s.Spec.Ports) != 1 {
			t.Errorf("Service %s has %d ports, want one listener's", s.Name, len(s.Spec.Ports))
			continue
		}
		switch resolvePort(t, c, s.Spec.Ports[0].TargetPort) {
		case publicPort:
			public = s
		case internalPort:
			internal = s
			if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("the internal Service is %s: it must stay inside the cluster (ClusterIP)", s.Spec.Type)
			}
		default:
			t.Errorf("Service %s targets port %s, neither listener's", s.Name, s.Spec.Ports[0].TargetPort.String())
		}
	}
	if public == nil || internal == nil || public == internal {
		t.Fatalf("want one Service per listener, got public %v, internal %v", public, internal)
	}
	return public, internal
}

// checkIngress checks that the Ingress sends everything to the public
// Service, and nothing to the internal one.
func checkIngress(t *testing.T, vs valueSet, o *objects, public, internal *corev1.Service) {
	t.Helper()
	for _, ing := range o.ingresses {
		var backends []*networkingv1.IngressBackend
		if ing.Spec.DefaultBackend != nil {
			backends = append(backends, ing.Spec.DefaultBackend)
		}
		var hosts []string
		for _, r := range ing.Spec.Rules {
			hosts = append(hosts, r.Host)
			if r.HTTP == nil || len(r.HTTP.Paths) == 0 {
				t.Errorf("Ingress rule for %q has no path", r.Host)
				continue
			}
			for i := range r.HTTP.Paths {
				backends = append(backends, &r.HTTP.Paths[i].Backend)
			}
		}
		for _, b := range backends {
			s := b.Service
			if s == nil || s.Name != public.Name {
				t.Errorf("Ingress backend %+v: want the public Service %s (never %s)", b, public.Name, internal.Name)
				continue
			}
			if s.Port.Name != public.Spec.Ports[0].Name && s.Port.Number != public.Spec.Ports[0].Port {
				t.Errorf("Ingress backend port %+v is not the public Service's %+v", s.Port, public.Spec.Ports[0])
			}
		}
		if (len(ing.Spec.TLS) > 0) != vs.ingressTLS {
			t.Errorf("Ingress TLS %+v; the set wants TLS: %v", ing.Spec.TLS, vs.ingressTLS)
		}
		for _, tls := range ing.Spec.TLS {
			for _, h := range tls.Hosts {
				if !slices.Contains(hosts, h) {
					t.Errorf("TLS for %q, which no rule serves", h)
				}
			}
		}
	}
}

// checkScaling checks the replica count, the HPA and the disruption
// budget against the Deployment.
func checkScaling(t *testing.T, vs valueSet, o *objects, dep *appsv1.Deployment) {
	t.Helper()
	podLabels := dep.Spec.Template.Labels
	if vs.hpa {
		if dep.Spec.Replicas != nil {
			t.Errorf("the Deployment sets replicas %d beside an HPA: every upgrade would reset the HPA's count", *dep.Spec.Replicas)
		}
	} else if dep.Spec.Replicas == nil || *dep.Spec.Replicas != vs.replicas {
		t.Errorf("replicas %v, want %d", dep.Spec.Replicas, vs.replicas)
	}
	for _, h := range o.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != dep.Name {
			t.Errorf("the HPA scales %+v, not Deployment %s", ref, dep.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HPA replicas %v to %d: want at least 2, so that a stopping pod's clients have somewhere to go", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) == 0 {
			t.Error("the HPA has no metric")
		}
	}
	for _, p := range o.pdbs {
		if p.Spec.Selector == nil || !matches(p.Spec.Selector.MatchLabels, podLabels) || len(p.Spec.Selector.MatchLabels) == 0 {
			t.Errorf("the PDB selects %v, not the pods %v", p.Spec.Selector, podLabels)
		}
		if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
			t.Error("the PDB bounds nothing")
		}
		if m := p.Spec.MaxUnavailable; m != nil && m.Type == intstr.Int && m.IntVal < 1 {
			t.Errorf("PDB maxUnavailable %d: no node could ever be drained", m.IntVal)
		}
	}
	if u := dep.Spec.Strategy.RollingUpdate; dep.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && u != nil {
		if u.MaxUnavailable != nil && u.MaxUnavailable.Type == intstr.Int && u.MaxUnavailable.IntVal == 0 &&
			(u.MaxSurge == nil || (u.MaxSurge.Type == intstr.Int && u.MaxSurge.IntVal == 0)) {
			t.Error("maxSurge and maxUnavailable both 0: the rollout cannot start")
		}
	}
}

// privateRanges are the networks the gateway never connects into: the
// intranet, the cluster, the cloud's metadata service.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
}

// checkNetworkPolicy checks the pods' NetworkPolicy: subscribers reach the
// public port, only named peers the internal one; the pods connect only to
// Redis (on TSLM_REDIS_URL's ports), the identity provider (on its
// issuer's port) and DNS.
func checkNetworkPolicy(t *testing.T, vs valueSet, np *networkingv1.NetworkPolicy, podLabels map[string]string, publicPort, internalPort int32, g gateway.Config) {
	t.Helper()
	if !matches(np.Spec.PodSelector.MatchLabels, podLabels) || len(np.Spec.PodSelector.MatchLabels) == 0 {
		t.Errorf("the NetworkPolicy selects %v, not the pods %v", np.Spec.PodSelector, podLabels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("policy types %v: without Egress the pods may connect anywhere", np.Spec.PolicyTypes)
	}

	var publicRule, internalRule bool
	for _, r := range np.Spec.Ingress {
		ports := tcpPorts(t, r.Ports)
		switch {
		case slices.Equal(ports, []int32{publicPort}):
			publicRule = true
		case slices.Equal(ports, []int32{internalPort}):
			internalRule = true
			if len(r.From) == 0 {
				t.Error("the internal port is open to every peer: publishing, creating and deleting channels would be too")
			}
		default:
			t.Errorf("ingress rule on ports %v: want the public port %d or the internal %d, each alone", ports, publicPort, internalPort)
		}
	}
	if !publicRule || !internalRule {
		t.Errorf("ingress rules for the public port: %v, for the internal port: %v; want both", publicRule, internalRule)
	}

	var wantRedis, wantIdP []int32
	if g.RedisURL != "" {
		wantRedis = redisPorts(t, g.RedisURL)
	}
	if g.OIDCIssuer != "" {
		u, err := url.Parse(g.OIDCIssuer)
		if err != nil {
			t.Fatal(err)
		}
		p := 443
		if u.Port() != "" {
			p, _ = strconv.Atoi(u.Port())
		}
		wantIdP = []int32{int32(p)}
	}
	var redis, idp, dns bool
	for _, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("egress rule %+v: without to or ports it lets the pods connect anywhere", r)
			continue
		}
		if isDNS(r.Ports) {
			dns = true
			continue
		}
		ports := tcpPorts(t, r.Ports)
		switch {
		case wantRedis != nil && containsAll(ports, wantRedis) && containsAll(vs.redisPorts, ports) && !redis:
			redis = true
		case wantIdP != nil && slices.Equal(ports, wantIdP) && !idp:
			idp = true
			checkPublicOnly(t, r.To)
		default:
			t.Errorf("egress rule on ports %v is none of Redis's %v, the identity provider's %v or DNS", ports, wantRedis, wantIdP)
		}
	}
	if redis != (wantRedis != nil) || idp != (wantIdP != nil) || !dns {
		t.Errorf("egress to Redis %v (want %v), the identity provider %v (want %v), DNS %v",
			redis, wantRedis != nil, idp, wantIdP != nil, dns)
	}
}

// tcpPorts are the numbered TCP ports of a rule, sorted; anything else is
// an error.
func tcpPorts(t *testing.T, ps []networkingv1.NetworkPolicyPort) []int32 {
	t.Helper()
	var out []int32
	for _, p := range ps {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP || p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
			t.Errorf("port %s: want one numbered TCP port", describePort(p))
			continue
		}
		out = append(out, p.Port.IntVal)
	}
	slices.Sort(out)
	return out
}

// isDNS tells a rule on port 53 alone, UDP and TCP.
func isDNS(ps []networkingv1.NetworkPolicyPort) bool {
	var udp, tcp bool
	for _, p := range ps {
		if p.Port == nil || p.Port.Type != intstr.Int || p.Port.IntVal != 53 || p.EndPort != nil {
			return false
		}
		switch {
		case p.Protocol != nil && *p.Protocol == corev1.ProtocolUDP:
			udp = true
		case p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP:
			tcp = true
		}
	}
	return udp && tcp
}

func containsAll(have, want []int32) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// checkPublicOnly checks that address blocks that reach the internet leave
// out every private range: the identity provider is reached, the intranet
// never.
func checkPublicOnly(t *testing.T, peers []networkingv1.NetworkPolicyPeer) {
	t.Helper()
	for _, p := range peers {
		if p.IPBlock == nil {
			continue
		}
		block, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			t.Errorf("ipBlock %q: %v", p.IPBlock.CIDR, err)
			continue
		}
		for _, private := range privateRanges {
			if !block.Overlaps(private) {
				continue
			}
			if !slices.ContainsFunc(p.IPBlock.Except, func(e string) bool {
				ex, err := netip.ParsePrefix(e)
				return err == nil && ex.Bits() <= private.Bits() && ex.Contains(private.Addr())
			}) {
				t.Errorf("ipBlock %s reaches %s, a private range: the gateway would connect inward", block, private)
			}
		}
	}
}

func describePort(p networkingv1.NetworkPolicyPort) string {
	proto := "TCP"
	if p.Protocol != nil {
		proto = string(*p.Protocol)
	}
	port := "any"
	if p.Port != nil {
		port = p.Port.String()
	}
	if p.EndPort != nil {
		port += "-" + strconv.Itoa(int(*p.EndPort))
	}
	return port + "/" + proto
}
