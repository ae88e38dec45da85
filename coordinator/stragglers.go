package coordinator

import (
	"maps"
	"slices"
	"sort"
	"sync"
	"time"
)

// A straggler slows every step of a synchronous job (the others wait for
// it in each collective) but is not broken: it is reported, never evicted.
// Each worker publishes the compute time of its steps (the step's wall
// time minus the time spent in collectives) in its etcd registration
// (WorkerLoad); the leader compares the members of the running generation.

// WorkerLoad is what a training worker says about its recent steps.
type WorkerLoad struct {
	Job        string `json:"job"`
	Generation uint64 `json:"generation"`
	Step       int64  `json:"step"`
	// ComputeS is a moving average of seconds per step spent outside the
	// collectives (forward, backward, optimizer).
	ComputeS float64   `json:"compute_s"`
	At       time.Time `json:"at"`
}

// Straggler is a member whose steps compute much slower than its peers'.
type Straggler struct {
	Worker string `json:"worker"`
	// ComputeS is its seconds of compute per step, PeersS the median of
	// the other members', Ratio their quotient.
	ComputeS float64 `json:"compute_s"`
	PeersS   float64 `json:"peers_s"`
	Ratio    float64 `json:"ratio"`
}

// Straggler thresholds: at least this many times the peers' median, and
// at least stragglerMinExtra seconds more per step (tiny steps are noisy).
const (
	stragglerRatio    = 1.5
	stragglerMinExtra = 0.005
	// loadFresh is how old a load report may be and still count (workers
	// publish every few seconds).
	loadFresh = 30 * time.Second
	// maxComputeS bounds a published compute time: etcd is writable by
	// every worker, and an absurd value (1e300 s against a peer's 0) made
	// the ratio +Inf, which encoding/json refuses, failing every GET of
	// the job.
	maxComputeS = 24 * 3600
)

// usable says whether a load report read from etcd may be used now: a
// compute time within [0, maxComputeS] and a time stamp no further than
// loadFresh from now either way (a future one would stay fresh forever).
func (l *WorkerLoad) usable(now time.Time) bool {
	if l == nil || !(l.ComputeS >= 0 && l.ComputeS <= maxComputeS) {
		return false
	}
	age := now.Sub(l.At)
	return age <= loadFresh && age >= -loadFresh
}

// findStragglers compares the members' fresh load reports for the job's
// generation. Fewer than two members with a report: none.
func findStragglers(job string, gen uint64, members []string, live map[string]WorkerInfo, now time.Time) []Straggler {
	compute := map[string]float64{}
	for _, m := range members {
		w, ok := live[m]
		if !ok || !w.Load.usable(now) || w.Load.Job != job || w.Load.Generation != gen {
			continue
		}
		compute[m] = w.Load.ComputeS
	}
	if len(compute) < 2 {
		return nil
	}
	var out []Straggler
	for _, m := range slices.Sorted(maps.Keys(compute)) {
		var others []float64
		for o, c := range compute {
			if o != m {
				others = append(others, c)
			}
		}
		sort.Float64s(others)
		med := others[len(others)/2]
		if len(others)%2 == 0 {
			med = (others[len(others)/2-1] + others[len(others)/2]) / 2
		}
		c := compute[m]
		if c >= stragglerRatio*med && c-med >= stragglerMinExtra {
			out = append(out, Straggler{Worker: m, ComputeS: c, PeersS: med, Ratio: c / max(med, 1e-9)})
		}
	}
	return out
}

// loadBoard is the leader's latest view of the live workers, shared by the
// controller (which writes it) and the API and metrics (which read it).
type loadBoard struct {
	mu   sync.Mutex
	live map[string]WorkerInfo
}

func (b *loadBoard) set(live map[string]WorkerInfo) {
	b.mu.Lock()
	b.live = live
	b.mu.Unlock()
}

// stragglers of job j; nil on a follower (the board is the leader's).
func (b *loadBoard) stragglers(j Job, now time.Time) []Straggler {
	if b == nil || j.Status != StatusRunning {
		return nil
	}
	b.mu.Lock()
	live := b.live
	b.mu.Unlock()
	return findStragglers(j.ID, j.Generation, j.Members, live, now)
}

// computeS is every live worker's usable published compute seconds per
// step.
func (b *loadBoard) computeS() map[string]float64 {
	if b == nil {
		return nil
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]float64{}
	for id, w := range b.live {
		if w.Load.usable(now) {
			out[id] = w.Load.ComputeS
		}
	}
	return out
}
