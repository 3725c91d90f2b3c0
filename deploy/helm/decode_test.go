package helm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// objects are the rendered objects, by kind.
type objects struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	ingresses       []*networkingv1.Ingress
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	pdbs            []*policyv1.PodDisruptionBudget
	networkPolicies []*networkingv1.NetworkPolicy
}

// kinds are the objects the chart may render: each kind at the one
// apiVersion a Kubernetes of kubeVersion or later serves. Anything else
// rendered is an error.
var kinds = map[string]struct {
	apiVersion string
	add        func(*objects, []byte) error
}{
	"Deployment":              {"apps/v1", adder(func(o *objects) *[]*appsv1.Deployment { return &o.deployments })},
	"Service":                 {"v1", adder(func(o *objects) *[]*corev1.Service { return &o.services })},
	"ConfigMap":               {"v1", adder(func(o *objects) *[]*corev1.ConfigMap { return &o.configMaps })},
	"Secret":                  {"v1", adder(func(o *objects) *[]*corev1.Secret { return &o.secrets })},
	"Ingress":                 {"networking.k8s.io/v1", adder(func(o *objects) *[]*networkingv1.Ingress { return &o.ingresses })},
	"HorizontalPodAutoscaler": {"autoscaling/v2", adder(func(o *objects) *[]*autoscalingv2.HorizontalPodAutoscaler { return &o.hpas })},
	"PodDisruptionBudget":     {"policy/v1", adder(func(o *objects) *[]*policyv1.PodDisruptionBudget { return &o.pdbs })},
	"NetworkPolicy":           {"networking.k8s.io/v1", adder(func(o *objects) *[]*networkingv1.NetworkPolicy { return &o.networkPolicies })},
}

func adder[T any](list func(*objects) *[]*T) func(*objects, []byte) error {
	return func(o *objects, js []byte) error {
		v := new(T)
		if err := decodeStrict(js, v); err != nil {
			return err
		}
		l := list(o)
		*l = append(*l, v)
		return nil
	}
}

// decodeStrict decodes JSON as the API server does: field names matched
// case-sensitively, an unknown or repeated field an error, like a value of
// the wrong type.
func decodeStrict(js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeAll splits helm's output into documents and decodes each strictly
// into its Kubernetes type.
func decodeAll(out string) (*objects, error) {
	o := &objects{}
	for i, doc := range docSeparator.Split(out, -1) {
		if isBlank(doc) {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %v\n%s", i, err, doc)
		}
		var tm metav1.TypeMeta
		if err := decodeStrictTypeMeta(js, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		k, ok := kinds[tm.Kind]
		if !ok {
			return nil, fmt.Errorf("document %d: kind %q is not one the chart should render\n%s", i, tm.Kind, doc)
		}
		if tm.APIVersion != k.apiVersion {
			return nil, fmt.Errorf("document %d: %s at apiVersion %q, want %q", i, tm.Kind, tm.APIVersion, k.apiVersion)
		}
		if err := k.add(o, js); err != nil {
			return nil, fmt.Errorf("document %d (%s): %v\n%s", i, tm.Kind, err, doc)
		}
	}
	return o, nil
}

// decodeStrictTypeMeta reads only apiVersion and kind, ignoring the rest.
func decodeStrictTypeMeta(js []byte, tm *metav1.TypeMeta) error {
	if _, err := kjson.UnmarshalStrict(js, tm); err != nil {
		return err
	}
	if tm.Kind == "" || tm.APIVersion == "" {
		return fmt.Errorf("no kind or apiVersion")
	}
	return nil
}

// isBlank tells a document of comments and blank lines only (helm's
// "# Source:" line above a template that rendered nothing).
func isBlank(doc string) bool {
	for line := range strings.SplitSeq(doc, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// secretValue is the decoded value of key in a rendered Secret's data.
func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// TestDecodeStrictRefuses holds the decoder to refusing what the API
// server refuses, so that the chart tests would see such a mistake.
func TestDecodeStrictRefuses(t *testing.T) {
	const head = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n"
	cases := []struct{ name, doc string }{
		{"unknown field", head + "spec:\n  portz: []\n"},
		{"field in the wrong case", head + "spec:\n  Type: ClusterIP\n"},
		{"repeated field", head + "spec:\n  type: ClusterIP\n  type: NodePort\n"},
		{"wrong type", head + "spec:\n  ports: {}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"},
		{"old apiVersion", "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: h\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := decodeAll("---\n" + c.doc); err == nil {
				t.Errorf("decoded without error:\n%s", c.doc)
			}
		})
	}
	o, err := decodeAll("---\n# Source: x\n---\n" + head + "spec:\n  type: ClusterIP\n")
	if err != nil || len(o.services) != 1 || o.services[0].Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("a valid Service: %v, %+v", err, o)
	}
	sec := &corev1.Secret{Data: map[string][]byte{"k": []byte("v")}}
	if v, ok := secretValue(sec, "k"); !ok || v != "v" {
		t.Errorf("secretValue = %q, %v", v, ok)
	}
}
