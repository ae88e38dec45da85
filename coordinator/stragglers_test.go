package coordinator

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFindStragglers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	load := func(compute float64, gen uint64, age time.Duration) WorkerInfo {
		return WorkerInfo{Load: &WorkerLoad{Job: "j", Generation: gen, ComputeS: compute, At: now.Add(-age)}}
	}
	members := []string{"a", "b", "c"}
	cases := []struct {
		name string
		live map[string]WorkerInfo
		want []string
	}{
		{"even", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.11, 3, 0), "c": load(0.12, 3, 0)}, nil},
		{"one twice as slow", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.21, 3, 0), "c": load(0.10, 3, 0)}, []string{"b"}},
		{"1.4× is not a straggler", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.14, 3, 0), "c": load(0.10, 3, 0)}, nil},
		{"tiny steps are noise", map[string]WorkerInfo{"a": load(0.001, 3, 0), "b": load(0.004, 3, 0), "c": load(0.001, 3, 0)}, nil},
		{"an older generation's report", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.30, 2, 0), "c": load(0.10, 3, 0)}, nil},
		{"a stale report", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.30, 3, time.Minute), "c": load(0.10, 3, 0)}, nil},
		{"one report only", map[string]WorkerInfo{"b": load(0.30, 3, 0), "c": {}}, nil},
		{"not a member", map[string]WorkerInfo{"a": load(0.10, 3, 0), "c": load(0.10, 3, 0), "d": load(0.5, 3, 0)}, nil},
		{"two members", map[string]WorkerInfo{"a": load(0.10, 3, 0), "c": load(0.30, 3, 0)}, []string{"c"}},
		// etcd is writable by every worker: absurd values are ignored.
		{"an absurd compute time", map[string]WorkerInfo{"a": load(0, 3, 0), "b": load(1e300, 3, 0), "c": load(0, 3, 0)}, nil},
		{"a negative compute time", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(-5, 3, 0), "c": load(0.30, 3, 0)}, []string{"c"}},
		{"a report from the future", map[string]WorkerInfo{"a": load(0.10, 3, 0), "b": load(0.30, 3, -time.Hour), "c": load(0.10, 3, 0)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range findStragglers("j", 3, members, tc.live, now) {
				got = append(got, s.Worker)
				if s.Ratio < stragglerRatio || s.ComputeS <= s.PeersS {
					t.Errorf("straggler %+v: ratio below the threshold", s)
				}
				if _, err := json.Marshal(s); err != nil {
					t.Errorf("straggler %+v does not encode: %v", s, err)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("stragglers %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRegistrationUpdate: a worker's load report replaces its published
// info under the same lease, and never brings back a closed registration.
func TestRegistrationUpdate(t *testing.T) {
	cli := startEtcd(t)
	ctx := context.Background()
	info := WorkerInfo{ID: "w1", Host: "h"}
	reg, err := Register(ctx, cli, "c", info, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	info.Load = &WorkerLoad{Job: "j", Generation: 1, Step: 7, ComputeS: 0.25}
	if err := reg.Update(ctx, info); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, reg.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", reg.Key(), resp, err)
	}
	var got WorkerInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &got); err != nil || got.Load == nil || got.Load.ComputeS != 0.25 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("published %s (lease %x), want the load report under the lease", resp.Kvs[0].Value, resp.Kvs[0].Lease)
	}
	// Values the coordinator would ignore are refused.
	if err := reg.Update(ctx, WorkerInfo{ID: "w2"}); err == nil {
		t.Error("Update with another id succeeded")
	}
	if err := reg.Update(ctx, WorkerInfo{ID: "w1", Host: strings.Repeat("h", MaxWorkerInfoBytes)}); err == nil {
		t.Error("Update over MaxWorkerInfoBytes succeeded")
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if err := reg.Update(ctx, info); err == nil {
		t.Error("Update after Close succeeded")
	}
	if resp, err := cli.Get(ctx, reg.Key()); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("after Close and Update the key is there: %v %v", resp.Kvs, err)
	}
}
