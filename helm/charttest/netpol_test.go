package charttest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// chartValues are the values a case renders with: the chart's defaults
// overlaid with its values file (maps merged, lists replaced, as helm does).
func chartValues(t *testing.T, c renderCase) map[string]any {
	t.Helper()
	read := func(path string) map[string]any {
		b, err := os.ReadFile(filepath.Join(chartDir, path))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return v
	}
	v := read("values.yaml")
	if c.valuesFile != "" {
		merge(v, read(c.valuesFile))
	}
	return v
}

func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

func lookup(v map[string]any, path ...string) any {
	var cur any = v
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// peerKey names a NetworkPolicy peer: "component:X" for a same-namespace
// podSelector that selects exactly the release's X pods, else the peer
// as canonical JSON (what the values asked for).
func (r *rendered) peerKey(t *testing.T, p networkingv1.NetworkPolicyPeer) string {
	t.Helper()
	if p.PodSelector != nil && p.NamespaceSelector == nil && p.IPBlock == nil {
		sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
		if err != nil {
			t.Fatalf("peer %v: %v", p, err)
		}
		var comps []string
		for _, w := range r.workloads() {
			if sel.Matches(labels.Set(w.template.Labels)) {
				comps = append(comps, w.template.Labels["app.kubernetes.io/component"])
			}
		}
		comps = slices.Compact(slices.Sorted(slices.Values(comps)))
		if len(comps) == 1 {
			return "component:" + comps[0]
		}
		if len(comps) > 1 {
			t.Errorf("peer %v selects the pods of %v: a rule for one component must not let in the others", p, comps)
		}
	}
	return canonicalJSON(t, p)
}

func canonicalJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(generic) // maps sort their keys
	return string(b)
}

// valuePeers are the peers of a values list, keyed like peerKey.
func valuePeers(t *testing.T, v any) []string {
	t.Helper()
	list, _ := v.([]any)
	var out []string
	for _, item := range list {
		b, _ := json.Marshal(item)
		var p networkingv1.NetworkPolicyPeer
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("values peer %s: %v", b, err)
		}
		out = append(out, canonicalJSON(t, p))
	}
	return out
}

// checkNetworkPolicies checks that each component's pods are selected by
// exactly one NetworkPolicy, of type Ingress, that lets in exactly the
// peers below on each container port, and nothing on any other port:
//
//	coordinator raft ← coordinators; api ← coordinators, workers, apiFrom; metrics ← metricsFrom
//	worker      metrics ← metricsFrom
//	etcd        client ← coordinators, workers; peer ← etcd; metrics ← metricsFrom
//	nats        client ← workers; cluster ← nats; monitor ← metricsFrom
func (r *rendered) checkNetworkPolicies(t *testing.T, c renderCase) {
	t.Helper()
	vals := chartValues(t, c)
	var pols []*networkingv1.NetworkPolicy
	for _, m := range r.all {
		if p, ok := m.obj.(*networkingv1.NetworkPolicy); ok {
			pols = append(pols, p)
		}
	}
	if enabled, _ := lookup(vals, "networkPolicy", "enabled").(bool); !enabled {
		if len(pols) != 0 {
			t.Errorf("networkPolicy.enabled is false, yet %d NetworkPolicies are rendered", len(pols))
		}
		return
	}
	apiFrom := valuePeers(t, lookup(vals, "networkPolicy", "apiFrom"))
	metricsFrom := valuePeers(t, lookup(vals, "networkPolicy", "metricsFrom"))
	want := map[string]map[string][]string{ // component → port name → peers
		"coordinator": {
			"raft":    {"component:coordinator"},
			"api":     append([]string{"component:coordinator", "component:worker"}, apiFrom...),
			"metrics": metricsFrom,
		},
		"worker": {"metrics": metricsFrom},
		"etcd":   {"client": {"component:coordinator", "component:worker"}, "peer": {"component:etcd"}, "metrics": metricsFrom},
		"nats":   {"client": {"component:worker"}, "cluster": {"component:nats"}, "monitor": metricsFrom},
	}
	covered := map[string]bool{}
	for _, w := range r.workloads() {
		comp := w.template.Labels["app.kubernetes.io/component"]
		wantPorts, known := want[comp]
		if !known {
			t.Errorf("%s: component %q has no expected NetworkPolicy; extend checkNetworkPolicies", w.what, comp)
			continue
		}
		covered[comp] = true
		var mine []*networkingv1.NetworkPolicy
		for _, p := range pols {
			sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
			if err != nil {
				t.Fatalf("NetworkPolicy %s: %v", p.Name, err)
			}
			if !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
				mine = append(mine, p)
			}
		}
		if len(mine) != 1 {
			t.Errorf("%s: %d NetworkPolicies select its pods, want 1", w.what, len(mine))
			continue
		}
		p := mine[0]
		if !slices.Equal(p.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("NetworkPolicy %s: policyTypes %v, want [Ingress]", p.Name, p.Spec.PolicyTypes)
		}
		// The container ports, by name and number.
		portName := map[int32]string{}
		names := map[string]bool{}
		for _, ctr := range w.template.Spec.Containers {
			for _, cp := range ctr.Ports {
				portName[cp.ContainerPort] = cp.Name
				names[cp.Name] = true
			}
		}
		got := map[string][]string{}
		for i, rule := range p.Spec.Ingress {
			what := fmt.Sprintf("NetworkPolicy %s ingress rule %d", p.Name, i)
			if len(rule.From) == 0 {
				t.Errorf("%s: no from, which lets in every source", what)
			}
			if len(rule.Ports) == 0 {
				t.Errorf("%s: no ports, which opens every port", what)
			}
			for _, pp := range rule.Ports {
				if pp.Protocol == nil || *pp.Protocol != corev1.ProtocolTCP || pp.EndPort != nil || pp.Port == nil {
					t.Errorf("%s: port %v, want one TCP port", what, pp)
					continue
				}
				name := pp.Port.StrVal
				if pp.Port.IntVal != 0 {
					name = portName[pp.Port.IntVal]
				}
				if !names[name] {
					t.Errorf("%s: port %s is not a container port of %s", what, pp.Port.String(), w.what)
					continue
				}
				for _, peer := range rule.From {
					got[name] = append(got[name], r.peerKey(t, peer))
				}
			}
		}
		for name := range names {
			g, wnt := sorted(got[name]), sorted(wantPorts[name])
			if !slices.Equal(g, wnt) {
				t.Errorf("NetworkPolicy %s port %s lets in\n  %v\nwant\n  %v", p.Name, name, g, wnt)
			}
		}
		for name := range wantPorts {
			if !names[name] {
				t.Errorf("%s has no container port %q, which its policy is expected to guard", w.what, name)
			}
		}
	}
	for _, p := range pols {
		comp := p.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]
		if !covered[comp] {
			t.Errorf("NetworkPolicy %s selects %q, which has no pods in this release", p.Name, comp)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// checkWorkerPDB checks that one PodDisruptionBudget selects the workers
// when worker.pdb.enabled, with the values' maxUnavailable, and none
// otherwise.
func (r *rendered) checkWorkerPDB(t *testing.T, c renderCase) {
	t.Helper()
	vals := chartValues(t, c)
	var workers map[string]string
	for _, w := range r.workloads() {
		if w.template.Labels["app.kubernetes.io/component"] == "worker" {
			workers = w.template.Labels
		}
	}
	var pdbs []*policyv1.PodDisruptionBudget
	for _, m := range r.all {
		if p, ok := m.obj.(*policyv1.PodDisruptionBudget); ok {
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && sel.Matches(labels.Set(workers)) {
				pdbs = append(pdbs, p)
			}
		}
	}
	enabled, _ := lookup(vals, "worker", "pdb", "enabled").(bool)
	if !enabled {
		if len(pdbs) != 0 {
			t.Errorf("worker.pdb.enabled is false, yet %d PDBs select the workers", len(pdbs))
		}
		return
	}
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets select the workers, want 1", len(pdbs))
	}
	p := pdbs[0]
	if p.Spec.MinAvailable != nil || p.Spec.MaxUnavailable == nil {
		t.Fatalf("worker PDB %s: want maxUnavailable only", p.Name)
	}
	if got, want := p.Spec.MaxUnavailable.String(), fmt.Sprint(lookup(vals, "worker", "pdb", "maxUnavailable")); got != want {
		t.Errorf("worker PDB %s: maxUnavailable %s, want %s", p.Name, got, want)
	}
}

// TestNetworkPolicyValues renders with the policies off, and with apiFrom
// and metricsFrom replaced or emptied, and checks what comes out.
func TestNetworkPolicyValues(t *testing.T) {
	helm := helmBinary(t)
	render := func(t *testing.T, set ...string) *rendered {
		args := []string{"template", "np", chartDir, "--namespace", "np"}
		for _, s := range set {
			args = append(args, "--set-json", s)
		}
		return parse(t, runHelm(t, helm, args...), "np")
	}
	t.Run("disabled", func(t *testing.T) {
		r := render(t, "networkPolicy.enabled=false", "worker.pdb.enabled=false")
		r.absent(t, "NetworkPolicy")
		if r.has("PodDisruptionBudget", "np-modcoord-worker") {
			t.Error("worker.pdb.enabled=false still renders the worker PDB")
		}
	})
	t.Run("no metrics, ingress controller", func(t *testing.T) {
		r := render(t, "networkPolicy.metricsFrom=[]",
			`networkPolicy.apiFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress-nginx"}}},{"ipBlock":{"cidr":"10.0.0.0/8"}}]`)
		w := r.get(t, "NetworkPolicy", "np-modcoord-worker").obj.(*networkingv1.NetworkPolicy)
		if w.Spec.Ingress == nil || len(w.Spec.Ingress) != 0 {
			t.Errorf("no metricsFrom: the worker policy must deny all ingress (ingress: []), got %v", w.Spec.Ingress)
		}
		c := r.get(t, "NetworkPolicy", "np-modcoord-coordinator").obj.(*networkingv1.NetworkPolicy)
		var api []string
		for _, rule := range c.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port.StrVal == "api" {
					for _, peer := range rule.From {
						api = append(api, r.peerKey(t, peer))
					}
				}
			}
		}
		want := []string{"component:coordinator", "component:worker",
			`{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress-nginx"}}}`, `{"ipBlock":{"cidr":"10.0.0.0/8"}}`}
		if !slices.Equal(sorted(api), sorted(want)) {
			t.Errorf("API port lets in %v, want %v", api, want)
		}
		for _, name := range []string{"np-modcoord-etcd", "np-modcoord-nats"} {
			for _, rule := range r.get(t, "NetworkPolicy", name).obj.(*networkingv1.NetworkPolicy).Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port.StrVal == "metrics" || p.Port.StrVal == "monitor" {
						t.Errorf("%s: metricsFrom is empty, yet port %s is open", name, p.Port.StrVal)
					}
				}
			}
		}
	})
	t.Run("percent PDB", func(t *testing.T) {
		r := render(t, `worker.pdb.maxUnavailable="25%"`)
		p := r.get(t, "PodDisruptionBudget", "np-modcoord-worker").obj.(*policyv1.PodDisruptionBudget)
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "25%" {
			t.Errorf("maxUnavailable %v, want 25%%", p.Spec.MaxUnavailable)
		}
	})
	for _, bad := range []struct{ name, set, want string }{
		{"peer with an unknown field", `networkPolicy.apiFrom=[{"podSelektor":{}}]`, "podSelektor"},
		{"empty peer", `networkPolicy.metricsFrom=[{}]`, "metricsFrom"},
		{"ipBlock with a selector", `networkPolicy.apiFrom=[{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]`, "apiFrom"},
		{"zero PDB", `worker.pdb.maxUnavailable=0`, "maxUnavailable"},
		{"typo", `networkPolicy.enable=true`, "enable"},
	} {
		t.Run("rejects "+bad.name, func(t *testing.T) {
			out, err := runHelmErr(helm, "template", "np", chartDir, "--set-json", bad.set)
			if err == nil {
				t.Fatalf("--set-json %s rendered", bad.set)
			}
			if !strings.Contains(out, bad.want) {
				t.Errorf("error does not mention %q:\n%s", bad.want, out)
			}
		})
	}
}

func runHelmErr(helm string, args ...string) (string, error) {
	out, err := exec.Command(helm, args...).CombinedOutput()
	return string(out), err
}
