package local

import (
	"testing"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/embedded"
)

// TestEtcdAuthCoversTheLayout: the etcd permissions SetupEtcdAuth grants
// are on the prefixes the coordinator and the workers use.
func TestEtcdAuthCoversTheLayout(t *testing.T) {
	for _, c := range []string{"local", "chaos"} {
		if a, b := coordinator.WorkersPrefix(c), embedded.EtcdWorkersPrefix(c); a != b {
			t.Errorf("workers prefix: coordinator %q, etcd auth %q", a, b)
		}
		if a, b := coordinator.AssignmentsPrefix(c), embedded.EtcdAssignmentsPrefix(c); a != b {
			t.Errorf("assignments prefix: coordinator %q, etcd auth %q", a, b)
		}
	}
}
