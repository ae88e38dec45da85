package layers

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/modcoord/modcoord/"

// allowed is, for every project package, the project packages it may
// import directly. A package missing from the table fails the test, so a
// new package must take its place in the graph on purpose.
var allowed = map[string][]string{
	// Leaves: the model, storage, and the pieces every layer shares.
	"mod":        {"vecmath"},
	"vecmath":    nil,
	"checkpoint": nil,
	"embedded":   nil,
	"tokenizer":  nil,
	"pki":        {"atomicfile"},
	"atomicfile": nil,
	"shard":      {"mod"},
	"corpus":     {"mod", "tokenizer"},
	"allreduce":  {"shard"},
	"jobspec":    {"mod", "tokenizer", "corpus"},
	"export":     {"mod", "checkpoint", "train"},
	// A rank's state kept in peers' memory: beside train, below the cluster parts.
	"peerstate": {"mod", "shard", "allreduce"},
	// One rank's training step.
	"train": {"mod", "shard", "allreduce", "checkpoint", "corpus", "tokenizer", "jobspec", "atomicfile"},
	// Cluster parts. The coordinator knows the spec it validates and the
	// manifests it commits, never the training code.
	"coordinator": {"mod", "checkpoint", "jobspec", "pki"},
	"worker":      {"train", "coordinator", "allreduce", "checkpoint", "mod", "shard", "corpus", "jobspec", "pki", "peerstate"},
	"isoflop":     {"train", "mod", "corpus", "atomicfile"},
	"bench":       {"mod", "allreduce", "shard", "embedded"},
	"local":       {"coordinator", "worker", "train", "allreduce", "embedded", "jobspec", "pki", "corpus", "mod"},
	// Entry points and test harnesses may import anything below them.
	"cmd/modcoord":            {"*"},
	"deploy/chaos":            {"*"},
	"deploy/chaos/chaosinfra": {"checkpoint", "embedded", "pki"},
	"deploy/kubetest/etcd":    {"embedded", "pki"},
	"deploy/certgen":          {"pki"},
	"deploy/kubetest/jobplan": {"jobspec"},
	"deploy/kubetest/pause":   nil,
	"helm/charttest":          nil,
	"layers":                  nil,
}

// forbiddenDeps are modules a package must not link, even indirectly.
var forbiddenDeps = map[string][]string{
	"train":       {"github.com/nats-io/nats-server", "go.etcd.io/etcd", "github.com/hashicorp/raft"},
	"worker":      {"github.com/nats-io/nats-server", "go.etcd.io/etcd/server"},
	"coordinator": {"github.com/nats-io/nats-server", "go.etcd.io/etcd/server"},
	"allreduce":   {"github.com/nats-io/nats-server"},
	"peerstate":   {"github.com/nats-io/nats-server", "go.etcd.io/etcd", "github.com/hashicorp/raft"},
	"mod":         {"github.com/nats-io", "go.etcd.io/etcd", "github.com/hashicorp/raft"},
	"isoflop":     {"github.com/nats-io", "go.etcd.io/etcd", "github.com/hashicorp/raft"},
}

// checkImports returns one error per project import that the table does
// not allow; imports maps a package (relative to the module) to the
// project packages it imports.
func checkImports(imports map[string][]string) []error {
	var errs []error
	for _, pkg := range sortedKeys(imports) {
		ok, known := allowed[pkg]
		if !known {
			errs = append(errs, fmt.Errorf("package %s has no row in layers.allowed: give it its place in the import graph", pkg))
			continue
		}
		if slices.Contains(ok, "*") {
			continue
		}
		for _, imp := range imports[pkg] {
			if !slices.Contains(ok, imp) {
				errs = append(errs, fmt.Errorf("%s imports %s, which the layering does not allow (allowed: %v)", pkg, imp, ok))
			}
		}
	}
	return errs
}

// checkDeps returns an error per forbidden module in a package's
// transitive dependencies.
func checkDeps(pkg string, deps []string) []error {
	var errs []error
	for _, bad := range forbiddenDeps[pkg] {
		for _, d := range deps {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				errs = append(errs, fmt.Errorf("%s links %s (forbidden prefix %s)", pkg, d, bad))
				break
			}
		}
	}
	return errs
}

func TestImportsRunOneWay(t *testing.T) {
	for _, err := range checkImports(projectImports(t)) {
		t.Error(err)
	}
}

func TestNoServersOrClusterUnderTrainingCode(t *testing.T) {
	for _, pkg := range sortedKeys(forbiddenDeps) {
		for _, err := range checkDeps(pkg, goList(t, "-deps", "./"+pkg)) {
			t.Error(err)
		}
	}
}

// TestPlantedViolationsFail shows that the checks above can fail.
func TestPlantedViolationsFail(t *testing.T) {
	cases := []struct {
		name    string
		imports map[string][]string
		pkg     string
		deps    []string
	}{
		{name: "model imports the training step", imports: map[string][]string{"mod": {"train"}}},
		{name: "coordinator imports the worker", imports: map[string][]string{"coordinator": {"worker"}}},
		{name: "isoflop imports the worker", imports: map[string][]string{"isoflop": {"worker"}}},
		{name: "an unplaced package", imports: map[string][]string{"grabbag": {"mod"}}},
		{name: "train links nats-server", pkg: "train", deps: []string{"fmt", "github.com/nats-io/nats-server/v2/server"}},
		{name: "isoflop links raft", pkg: "isoflop", deps: []string{"github.com/hashicorp/raft"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var errs []error
			if tc.imports != nil {
				errs = checkImports(tc.imports)
			} else {
				errs = checkDeps(tc.pkg, tc.deps)
			}
			if len(errs) == 0 {
				t.Fatal("the planted violation passed")
			}
		})
	}
}

// projectImports lists every project package's direct project imports.
func projectImports(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/modcoord/modcoord/...") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg := strings.TrimPrefix(fields[0], module)
		out[pkg] = nil
		for _, imp := range fields[1:] {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				out[pkg] = append(out[pkg], rel)
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("go list found only %d packages", len(out))
	}
	return out
}

// goList runs go list at the module root. It first reads every Go source
// file and go.mod through this process, so that go test's cache, which
// sees only what the test process itself opens, reruns the test when any
// of them changes.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	readSources(t)
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func readSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "..") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod") {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("read the module's sources: %v", err)
	}
}
