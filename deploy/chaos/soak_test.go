//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
)

// The soak: one long job under a seeded random schedule of faults that may
// overlap, then the same checks as every scenario (bit-identical final
// state, no committed checkpoint lost) and a table per fault kind.
//
//	CHAOS_SOAK_FAULTS  faults to inject (default 50)
//	CHAOS_SOAK_SEED    the schedule's seed (default: the clock; printed, so
//	                   that a failing schedule can be replayed)
//	CHAOS_SOAK_GAP     mean time between fault starts (default 3s)
//
// The job runs CHAOS_STEPS steps, as does the undisturbed run it is
// compared with; it must outlast the schedule (the suite fails, asking for
// more steps, if it ends first).

// soakKinds are the faults the schedule draws from, with their weights.
var soakKinds = []struct {
	kind   string
	weight float64
}{
	{"worker-kill", 5},        // SIGKILL a worker, start it again 0-4 s later
	{"leader-kill", 2},        // SIGKILL the raft leader, start it again 2-6 s later
	{"follower-kill", 2},      // SIGKILL a raft follower, start it again 2-6 s later
	{"partition-minority", 3}, // cut one coordinator (the leader half the time) off for 3-8 s
	{"partition-majority", 1}, // cut two coordinators off (the one left has no quorum) for 3-8 s
	{"partition-worker", 2},   // cut a worker off for 3-8 s
	{"worker-stop", 3},        // SIGSTOP a worker for 4-9 s (its lease is 3 s): a hang
	{"netem", 3},              // 50-150 ms delay and 2-8 % loss on a worker's link for 5-15 s
	{"nats-restart", 1},       // restart the NATS server
	{"etcd-restart", 1},       // restart etcd
	{"fill-checkpoints", 1},   // fill the checkpoint volume for 5-12 s
	{"restart-all", 0.5},      // stop every container, start them again (alone: nothing else runs)
}

// soakFault is one drawn fault and what happened to it.
type soakFault struct {
	N      int           `json:"n"`
	Kind   string        `json:"kind"`
	Offset time.Duration `json:"offset_ns"` // drawn start, after the previous fault's start
	Down   time.Duration `json:"down_ns"`   // how long the fault lasts
	Pick   int           `json:"pick"`      // which target, as an index into the candidates
	Param  float64       `json:"param"`     // kind-specific: netem loss, leader-or-follower

	Target  string    `json:"target"`
	Start   time.Time `json:"start"`
	Healed  time.Time `json:"healed"` // undone (restarted, reconnected, continued)
	Clear   time.Time `json:"clear"`  // from when the job could move again (see blockingEnd)
	Gen     uint64    `json:"generation_at_fault"`
	Leader  string    `json:"leader_at_fault"`
	Err     string    `json:"error,omitempty"`
	Skipped string    `json:"skipped,omitempty"`

	Detect    time.Duration `json:"detect_ns"`
	Detected  bool          `json:"detected"`
	Resume    time.Duration `json:"resume_ns"`
	Resumed   bool          `json:"resumed"`
	StepsLost int64         `json:"steps_lost"`
	// ResumedFrom is where the generation that resumed after the fault
	// took its state: "memory", "checkpoint", "start" (nothing committed
	// or held yet), or "" when the fault's generation itself went on.
	ResumedFrom string `json:"resumed_from,omitempty"`
}

// drawSchedule is a pure function of the seed: the kinds, gaps, durations
// and target picks. Who leads is known only when a fault starts.
func drawSchedule(seed uint64, n int, gap time.Duration) []*soakFault {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var total float64
	for _, k := range soakKinds {
		total += k.weight
	}
	dur := func(lo, hi float64) time.Duration {
		return time.Duration((lo + rng.Float64()*(hi-lo)) * float64(time.Second))
	}
	var out []*soakFault
	restarts := 0
	for i := 0; len(out) < n; i++ {
		x := rng.Float64() * total
		kind := soakKinds[len(soakKinds)-1].kind
		for _, k := range soakKinds {
			if x < k.weight {
				kind = k.kind
				break
			}
			x -= k.weight
		}
		if kind == "restart-all" {
			if restarts >= 2 {
				continue
			}
			restarts++
		}
		f := &soakFault{N: len(out) + 1, Kind: kind, Pick: rng.IntN(1 << 20), Param: rng.Float64()}
		f.Offset = time.Duration(min(3, rng.ExpFloat64()) * float64(gap))
		switch kind {
		case "worker-kill":
			f.Down = dur(0, 4)
		case "leader-kill", "follower-kill":
			f.Down = dur(2, 6)
		case "partition-minority", "partition-majority", "partition-worker":
			f.Down = dur(3, 8)
		case "worker-stop":
			f.Down = dur(4, 9)
		case "netem":
			f.Down = dur(5, 15)
		case "fill-checkpoints":
			f.Down = dur(5, 12)
		}
		out = append(out, f)
	}
	return out
}

// soaker injects faults into a running cluster, at most one per container.
type soaker struct {
	c  *cluster
	tr *tracker

	mu        sync.Mutex
	busy      map[string]bool // containers a running fault holds
	exclusive bool            // restart-all is running
	running   int
}

// acquire claims the containers (all of them: exclusive) once they are
// free. pick learns who leads now ("" if no one), asked before each try.
func (s *soaker) acquire(ctx context.Context, exclusive bool, pick func(free func(string) bool, leader string) []string) ([]string, error) {
	for {
		leader := s.c.leaderNow("")
		s.mu.Lock()
		if !s.exclusive && (!exclusive || s.running == 0) {
			got := pick(func(svc string) bool { return !s.busy[svc] }, leader)
			if got != nil || exclusive {
				for _, svc := range got {
					s.busy[svc] = true
				}
				s.running++
				s.exclusive = exclusive
				s.mu.Unlock()
				return got, nil
			}
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *soaker) release(svcs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range svcs {
		delete(s.busy, svc)
	}
	s.running--
	s.exclusive = false
}

// choose picks the n-th free candidate (modulo), or nil if none is free.
func choose(cands []string, free func(string) bool, n int) []string {
	var ok []string
	for _, c := range cands {
		if free(c) {
			ok = append(ok, c)
		}
	}
	if len(ok) == 0 {
		return nil
	}
	return []string{ok[n%len(ok)]}
}

func sleepFor(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// inject runs one fault to its end (the fault undone).
func (s *soaker) inject(ctx context.Context, f *soakFault) {
	c := s.c
	exclusive := f.Kind == "restart-all"
	targets, err := s.acquire(ctx, exclusive, func(free func(string) bool, leader string) []string {
		var followers []string
		for _, co := range coordinators {
			if co != leader {
				followers = append(followers, co)
			}
		}
		switch f.Kind {
		case "worker-kill", "partition-worker", "worker-stop", "netem":
			return choose(workers, free, f.Pick)
		case "leader-kill":
			if leader == "" || !free(leader) {
				return nil
			}
			return []string{leader}
		case "follower-kill":
			return choose(followers, free, f.Pick)
		case "partition-minority":
			if f.Param < 0.5 && leader != "" && free(leader) {
				return []string{leader}
			}
			return choose(coordinators, free, f.Pick)
		case "partition-majority":
			var ok []string
			for _, co := range coordinators {
				if free(co) {
					ok = append(ok, co)
				}
			}
			if len(ok) < 2 {
				return nil
			}
			i := f.Pick % len(ok)
			return []string{ok[i], ok[(i+1)%len(ok)]}
		case "nats-restart":
			return choose([]string{"nats"}, free, 0)
		case "etcd-restart":
			return choose([]string{"etcd"}, free, 0)
		case "fill-checkpoints":
			return choose([]string{"ckpt-keeper"}, free, 0)
		}
		return nil
	})
	if err != nil {
		f.Skipped = err.Error()
		return
	}
	defer s.release(targets)
	f.Target = strings.Join(targets, "+")
	f.Leader = c.leaderNow("")
	s.tr.mu.Lock()
	f.Gen = s.tr.last.Generation
	s.tr.mu.Unlock()
	fail := func(err error) {
		if err != nil && f.Err == "" {
			f.Err = err.Error()
		}
	}
	docker := func(args ...string) error {
		_, err := c.docker(2*time.Minute, args...)
		return err
	}
	f.Start = time.Now()
	switch f.Kind {
	case "worker-kill", "leader-kill", "follower-kill":
		at, err := c.kill(targets[0])
		f.Start = at
		fail(err)
		if f.Kind != "worker-kill" {
			f.Clear = at // the other coordinators go on without it
		}
		sleepFor(ctx, f.Down)
		fail(docker("start", container(targets[0])))
	case "partition-minority", "partition-majority", "partition-worker":
		for _, t := range targets {
			fail(docker("network", "disconnect", network, container(t)))
		}
		if f.Kind == "partition-minority" {
			f.Clear = time.Now()
		}
		sleepFor(ctx, f.Down)
		for _, t := range targets {
			fail(docker("network", "connect", "--alias", t, network, container(t)))
		}
	case "worker-stop":
		fail(docker("kill", "-s", "STOP", container(targets[0])))
		sleepFor(ctx, f.Down)
		fail(docker("kill", "-s", "CONT", container(targets[0])))
	case "netem":
		fail(c.netem(targets[0], 50+int(f.Param*100), 2+f.Param*6))
		f.Clear = time.Now() // the job goes on, slower
		sleepFor(ctx, f.Down)
		fail(c.netem(targets[0], 0, 0))
	case "nats-restart", "etcd-restart":
		fail(docker("restart", "-t", "2", container(targets[0])))
	case "fill-checkpoints":
		_, err := c.docker(time.Minute, "exec", container("ckpt-keeper"), "/usr/local/bin/chaosinfra", "fill", "--path=/checkpoints/.chaos-fill")
		fail(err)
		sleepFor(ctx, f.Down)
		_, err = c.docker(time.Minute, "exec", container("ckpt-keeper"), "/usr/local/bin/chaosinfra", "fill", "--remove", "--path=/checkpoints/.chaos-fill")
		fail(err)
	case "restart-all":
		fail(c.restartAll(f))
	}
	f.Healed = time.Now()
	if f.Clear.IsZero() {
		f.Clear = f.Healed
	}
	c.logf("soak: fault %d %s on %s: %s down, healed after %s%s", f.N, f.Kind, f.Target, f.Down.Round(100*time.Millisecond),
		f.Healed.Sub(f.Start).Round(100*time.Millisecond), errNote(f.Err))
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return " (error: " + truncate(e, 200) + ")"
}

// netem degrades (delay, loss) or restores a container's eth0, from the
// host in its network namespace (the image has no tc; needs root). Where
// the kernel has no netem qdisc (some VMs), it falls back to a slow link
// (tbf, 20 Mbit/s, whose queue adds the delay) and random drops with
// iptables' statistic match.
func (c *cluster) netem(svc string, delayMS int, lossPct float64) error {
	out, err := c.docker(30*time.Second, "inspect", "-f", "{{.State.Pid}}", container(svc))
	if err != nil {
		return err
	}
	pid := strings.TrimSpace(out)
	if pid == "" || pid == "0" {
		return fmt.Errorf("netem: %s is not running", svc)
	}
	ns := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return run(ctx, nil, "nsenter", append([]string{"-t", pid, "-n"}, args...)...)
	}
	// The link's name: eth0 at first, but a container disconnected and
	// connected again (a partition) may get another.
	dev := "eth0"
	if out, err := ns("ip", "-o", "-4", "route", "show", "default"); err == nil {
		if f := strings.Fields(out); len(f) > 4 && f[3] == "dev" {
			dev = f[4]
		}
	}
	drop := func(op, chain string) []string {
		return []string{"iptables", op, chain, "-m", "statistic", "--mode", "random", "--probability",
			strconv.FormatFloat(lossPct/100, 'f', 3, 64), "-j", "DROP"}
	}
	if delayMS <= 0 { // clear: whatever is there (gone with a restarted container's namespace)
		_, _ = ns("tc", "qdisc", "del", "dev", dev, "root")
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			for range 5 {
				out, err := ns("iptables", "-S", chain)
				if err != nil || !strings.Contains(out, "statistic") {
					break
				}
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "statistic") {
						_, _ = ns(append([]string{"iptables", "-D"}, strings.Fields(strings.TrimPrefix(l, "-A "))...)...)
					}
				}
			}
		}
		return nil
	}
	_, err = ns("tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", fmt.Sprintf("%dms", delayMS), "10ms",
		"loss", fmt.Sprintf("%.1f%%", lossPct))
	if err == nil || !strings.Contains(err.Error(), "qdisc kind is unknown") {
		return err
	}
	c.netemFallback.Store(true)
	if _, err := ns("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "20mbit", "burst", "32kbit",
		"latency", fmt.Sprintf("%dms", 4*delayMS)); err != nil {
		return err
	}
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		if _, err := ns(drop("-A", chain)...); err != nil {
			return err
		}
	}
	return nil
}

// restartAll stops every modcoord container at once and starts them again
// (etcd and NATS first); the checkpoint keeper, the storage, stays.
func (c *cluster) restartAll(f *soakFault) error {
	var names []string
	for _, svc := range allServices {
		names = append(names, container(svc))
	}
	issued := f.Start
	if _, err := c.docker(2*time.Minute, append([]string{"stop", "-t", "10"}, names...)...); err != nil {
		return err
	}
	// The fault is when the first process exited.
	if first := c.firstExit(issued); !first.IsZero() {
		f.Start = first
	}
	return c.startAll()
}

// repair undoes whatever a failed injection left behind, without touching
// the job: every container running (and continued) and on the network, no
// netem, the checkpoint volume not full.
func (c *cluster) repair() {
	for _, svc := range allServices {
		_, _ = c.docker(30*time.Second, "kill", "-s", "CONT", container(svc))
		if st, err := c.inspect(svc); err == nil {
			if _, ok := st.Networks[network]; !ok {
				c.logf("soak repair: reconnecting %s", svc)
				_, _ = c.docker(time.Minute, "network", "connect", "--alias", svc, network, container(svc))
			}
			if !st.Running {
				c.logf("soak repair: starting %s", svc)
				_, _ = c.docker(time.Minute, "start", container(svc))
			}
		}
	}
	for _, w := range workers {
		_ = c.netem(w, 0, 0)
	}
	_, _ = c.docker(time.Minute, "exec", container("ckpt-keeper"), "/usr/local/bin/chaosinfra", "fill", "--remove", "--path=/checkpoints/.chaos-fill")
}

// measureSoak fills in each fault's detection, resumption and lost steps
// from what the tracker saw. tr.mu is held. With overlapping faults a
// generation change or a stall is counted for every fault it follows.
//
//   - detect: start → the first reaction the coordinators recorded: a new
//     generation formed or a new leader named (none: "-", e.g. for a
//     netem fault nothing had to notice);
//   - resume: start → the first progress report applied after the fault
//     stopped blocking (Clear: a worker back, a partition healed; at once
//     for a lost coordinator, netem) that shows the job moving: a later
//     generation than at the fault, or a step past the last one applied
//     before it stopped blocking;
//   - steps lost: when a generation formed after the fault (before it
//     resumed), the highest step the fault's generation reported minus
//     the step the new one resumed from.
func measureSoak(tr *tracker, f *soakFault, end time.Time) {
	if f.Start.IsZero() || f.Skipped != "" {
		return
	}
	var react time.Time
	for _, g := range tr.gens {
		if g.At.After(f.Start) && g.Gen > f.Gen && (react.IsZero() || g.At.Before(react)) {
			react = g.At
		}
	}
	if at, _, ok := tr.newLeaderAfter(f.Start, f.Leader); ok && (react.IsZero() || at.Before(react)) && f.Leader != "" {
		react = at
	}
	if !react.IsZero() && react.Before(end) {
		f.Detect, f.Detected = react.Sub(f.Start), true
	}
	before := tr.lastStepBefore(f.Clear)
	var first coordinator.ProgressPoint
	found := false
	for _, p := range tr.points {
		if !p.At.After(f.Clear) || !(p.Generation > f.Gen || p.Step > before) {
			continue
		}
		if !found || p.At.Before(first.At) {
			first, found = p, true
		}
	}
	if found {
		f.Resume, f.Resumed = first.At.Sub(f.Start), true
	}
	if found && first.Generation > f.Gen {
		var high int64
		for _, p := range tr.points {
			if p.Generation == f.Gen && p.Step > high {
				high = p.Step
			}
		}
		var start int64 = -1
		for _, g := range tr.gens {
			if g.Gen == first.Generation {
				start = g.StartStep
				switch {
				case g.FromMemory:
					f.ResumedFrom = "memory"
				case g.StartStep == 0:
					f.ResumedFrom = "start"
				default:
					f.ResumedFrom = "checkpoint"
				}
			}
		}
		if start >= 0 {
			f.StepsLost = max(0, high-start)
		}
	}
}

type kindRow struct {
	kind                string
	count, errs         int
	detect, resume      []time.Duration
	lost                []int64
	undetected, stalled int
	// fromMemory and fromDisk count the faults after which a new
	// generation resumed from memory, or from a checkpoint on disk.
	fromMemory, fromDisk int
}

func median[T int64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// touchesWorkers says whether a fault kind can take a worker's memory or
// its ring away (coordinator kills and partitions cannot: the workers'
// state survives them untouched).
func touchesWorkers(kind string) bool {
	switch kind {
	case "leader-kill", "follower-kill", "partition-minority", "partition-majority":
		return false
	}
	return true
}

// window is the span in which a fault holds something down: from its
// start until it healed, widened by 5 s each side (a lease's expiry, the
// leader's debounce) within which a second fault lands on the same
// decision of the next generation.
func (f *soakFault) window() (from, to time.Time) {
	return f.Start.Add(-5 * time.Second), f.Healed.Add(5 * time.Second)
}

// workerKillReport attributes each worker kill: what the next generation
// resumed from, the steps lost, and which other worker-touching faults
// overlapped it. In-memory recovery's claim (at most one step lost, no
// checkpoint read) is about a kill the survivors can serve: the isolated
// ones; a kill that overlaps a second kill, a hang, a restart of
// everything or the bus may find the state truly gone.
func workerKillReport(faults []*soakFault) string {
	var b strings.Builder
	var isolated, fromMemory int
	var worst int64
	for _, f := range faults {
		if f.Kind != "worker-kill" || f.Skipped != "" || f.Start.IsZero() {
			continue
		}
		from, to := f.window()
		var with []string
		for _, o := range faults {
			if o == f || o.Skipped != "" || o.Start.IsZero() || !touchesWorkers(o.Kind) {
				continue
			}
			if ofrom, oto := o.window(); ofrom.Before(to) && oto.After(from) {
				with = append(with, fmt.Sprintf("%d %s %s", o.N, o.Kind, o.Target))
			}
		}
		resumed := f.ResumedFrom
		if resumed == "" {
			resumed = "the same generation"
		}
		overlap := "isolated"
		if len(with) > 0 {
			overlap = "with " + strings.Join(with, ", ")
		} else {
			isolated++
			worst = max(worst, f.StepsLost)
			if f.ResumedFrom == "memory" {
				fromMemory++
			}
		}
		fmt.Fprintf(&b, "  %2d %-3s lost %-3d from %-19s %s\n", f.N, f.Target, f.StepsLost, resumed, overlap)
	}
	return fmt.Sprintf("worker kills: %d isolated (no other worker, bus, storage or restart fault overlapping), %d of them resumed from memory, worst steps lost %d\n%s",
		isolated, fromMemory, worst, b.String())
}

func soakTable(faults []*soakFault) string {
	rows := map[string]*kindRow{}
	for _, f := range faults {
		if f.Skipped != "" || f.Start.IsZero() {
			continue
		}
		r := rows[f.Kind]
		if r == nil {
			r = &kindRow{kind: f.Kind}
			rows[f.Kind] = r
		}
		r.count++
		if f.Err != "" {
			r.errs++
		}
		if f.Detected {
			r.detect = append(r.detect, f.Detect)
		} else {
			r.undetected++
		}
		if f.Resumed {
			r.resume = append(r.resume, f.Resume)
		} else {
			r.stalled++
		}
		r.lost = append(r.lost, f.StepsLost)
		switch f.ResumedFrom {
		case "memory":
			r.fromMemory++
		case "checkpoint":
			r.fromDisk++
		}
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tCOUNT\tDETECT MEDIAN\tDETECT WORST\tRESUME MEDIAN\tRESUME WORST\tSTEPS LOST (SUM, WORST)\tRESUMED FROM (MEMORY, DISK)\tNOTES")
	d := func(xs []time.Duration, f func([]time.Duration) time.Duration) string {
		if len(xs) == 0 {
			return "-"
		}
		return f(xs).Round(10 * time.Millisecond).String()
	}
	kinds := make([]string, 0, len(rows))
	for k := range rows {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	total := 0
	for _, k := range kinds {
		r := rows[k]
		total += r.count
		var sum, worst int64
		for _, l := range r.lost {
			sum += l
			worst = max(worst, l)
		}
		var notes []string
		if r.undetected > 0 {
			notes = append(notes, fmt.Sprintf("%d needed no reaction", r.undetected))
		}
		if r.stalled > 0 {
			notes = append(notes, fmt.Sprintf("%d without progress after", r.stalled))
		}
		if r.errs > 0 {
			notes = append(notes, fmt.Sprintf("%d injection errors", r.errs))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d, %d\t%d, %d\t%s\n", k, r.count,
			d(r.detect, median[time.Duration]), d(r.detect, slices.Max[[]time.Duration]),
			d(r.resume, median[time.Duration]), d(r.resume, slices.Max[[]time.Duration]),
			sum, worst, r.fromMemory, r.fromDisk, strings.Join(notes, "; "))
	}
	fmt.Fprintf(tw, "all\t%d\t\t\t\t\t\t\t\n", total)
	tw.Flush()
	return b.String()
}

// isolatedCount is how many isolated worker kills follow the random
// schedule (CHAOS_SOAK_ISOLATED, default 3).
func isolatedCount(t *testing.T) int {
	n := 3
	if s := os.Getenv("CHAOS_SOAK_ISOLATED"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			t.Fatalf("CHAOS_SOAK_ISOLATED=%q: want a non-negative integer", s)
		}
		n = v
	}
	return n
}

// isolatedKills kills one worker at a time after the random schedule, each
// once the job has trained 20 steps in a generation with its full world
// and nothing else is down: at the schedule's density (a fault every 3 s)
// almost every kill overlaps another fault, and in-memory recovery's
// claim is about the kill the survivors can serve. Each is a fault of the
// soak's tables; the victims follow from the seed.
func isolatedKills(ctx context.Context, s *soaker, tr *tracker, seed uint64, after, n int) []*soakFault {
	rng := rand.New(rand.NewPCG(seed^0x150147ed, seed))
	var out []*soakFault
	for i := range n {
		f := &soakFault{N: after + i + 1, Kind: "worker-kill", Down: 2 * time.Second, Pick: rng.IntN(len(workers))}
		out = append(out, f)
		var from int64 = -1
		var gen uint64
		err := tr.waitFor(2*time.Minute, "a settled generation for an isolated kill", func(tr *tracker) bool {
			j := tr.last
			if j.Status.Terminal() {
				return true
			}
			if j.Status != coordinator.StatusRunning || len(j.Members) != len(workers) {
				return false
			}
			if j.Generation != gen {
				gen, from = j.Generation, j.Ledger.StepsDone
			}
			return j.Ledger.StepsDone >= from+20
		})
		if err != nil || tr.snapshot().Status.Terminal() {
			f.Skipped = "the job had ended, or no settled generation"
			continue
		}
		s.inject(ctx, f)
		// Apart from the next one by more than the report's overlap margin.
		sleepFor(ctx, 10*time.Second)
	}
	return out
}

func TestChaosSoak(t *testing.T) {
	suiteStart := time.Now()
	nFaults := 50
	if s := os.Getenv("CHAOS_SOAK_FAULTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CHAOS_SOAK_FAULTS=%q: want a positive integer", s)
		}
		nFaults = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SOAK_SEED=%q: want an unsigned integer", s)
		}
		seed = v
	}
	gap := 3 * time.Second
	if s := os.Getenv("CHAOS_SOAK_GAP"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CHAOS_SOAK_GAP=%q: want a positive duration", s)
		}
		gap = d
	}
	schedule := drawSchedule(seed, nFaults, gap)
	t.Logf("soak: seed %d (replay with CHAOS_SOAK_SEED=%d CHAOS_SOAK_FAULTS=%d CHAOS_SOAK_GAP=%s CHAOS_STEPS=%s)",
		seed, seed, nFaults, gap, envOr("CHAOS_STEPS", "1500"))
	fmt.Printf("soak seed %d\n", seed)

	c := startCluster(t)
	base, baseFP := c.runJob("baseline", nil, nil)
	if !base.Pass || baseFP == nil {
		c.report([]*result{base}, suiteStart)
		t.Fatalf("the undisturbed run failed: %s", strings.Join(base.Failures, "\n"))
	}

	r := &result{Fault: fmt.Sprintf("soak (%d faults, seed %d)", nFaults, seed)}
	if err := c.ensureHealthy(); err != nil {
		t.Fatalf("cluster not healthy before the soak: %v", err)
	}
	id, err := c.submit("chaos-soak")
	if err != nil {
		t.Fatal(err)
	}
	r.Job = id
	t0 := time.Now()
	tr := c.track(id)
	defer tr.stop()
	// Faults begin once the job trains with its full world and committed
	// a checkpoint.
	if err := tr.waitFor(5*time.Minute, "the soak job's first commit", func(tr *tracker) bool {
		j := tr.last
		return j.Status.Terminal() || (j.Status == coordinator.StatusRunning && j.Checkpoint != nil)
	}); err != nil {
		t.Fatal(err)
	}
	soakAt := time.Now()
	s := &soaker{c: c, tr: tr, busy: map[string]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	endedEarly := false
	for _, f := range schedule {
		sleepFor(ctx, f.Offset)
		if tr.snapshot().Status.Terminal() {
			endedEarly = true
			f.Skipped = "the job had ended"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.inject(ctx, f)
		}()
		// restart-all runs alone: the next fault waits for it.
		if f.Kind == "restart-all" {
			wg.Wait()
		}
	}
	wg.Wait()
	scheduleEnd := time.Now()
	c.logf("soak: schedule of %d faults done in %s; repairing anything left over", nFaults, scheduleEnd.Sub(soakAt).Round(time.Second))
	c.repair()
	schedule = append(schedule, isolatedKills(ctx, s, tr, seed, nFaults, isolatedCount(t))...)

	err = tr.waitFor(15*time.Minute, "the soak job to end", func(tr *tracker) bool { return tr.last.Status.Terminal() })
	tr.stop()
	tr.pollOnce()
	final := tr.snapshot()
	r.JobWall = time.Since(t0)
	if err != nil {
		r.fail("%v", err)
	}
	if endedEarly {
		r.fail("the job ended before the schedule did: raise CHAOS_STEPS")
	}
	if final.Status != coordinator.StatusCompleted {
		r.fail("job %s: %s %s", id, final.Status, final.Reason)
	}
	if final.Ledger.StepsDone != c.steps {
		r.fail("steps done %d, want %d", final.Ledger.StepsDone, c.steps)
	}
	if final.Checkpoint == nil || final.Checkpoint.Step != c.steps || final.Checkpoint.World != world {
		r.fail("final checkpoint %s, want step %d of world %d", ckSummary(final.Checkpoint), c.steps, world)
	} else {
		fp := fingerprint(final.Checkpoint.Shards)
		r.Fingerprint = fp.Lines()
		if !sameFingerprint(fp, baseFP) {
			r.fail("final state differs from the undisturbed run's:\n  got  %s\n  want %s",
				strings.Join(fp.Lines(), "\n       "), strings.Join(baseFP.Lines(), "\n       "))
		}
	}
	if final.Ledger.FLOPsPerStep > 0 {
		r.LedgerRedone = (final.Ledger.FLOPsSpent - final.Ledger.FLOPsUsed) / final.Ledger.FLOPsPerStep
	}
	if r.LedgerRedone < -0.5 {
		r.fail("the ledger counts %.0f redone steps: flops_spent is below flops_used", r.LedgerRedone)
	}

	tr.mu.Lock()
	injected := 0
	for _, f := range schedule {
		measureSoak(tr, f, time.Now())
		if f.Skipped == "" && !f.Start.IsZero() {
			injected++
		}
	}
	committed := make([]checkpoint.Manifest, 0, len(tr.committed))
	firstSeen := map[ckKey]time.Time{}
	for k, m := range tr.committed {
		committed = append(committed, m)
		firstSeen[k] = tr.firstSeen[k]
	}
	gens := cloneGens(tr.gens)
	// No generation may resume from a step older than a checkpoint seen
	// committed before it formed: that would be a lost commit.
	for _, g := range gens {
		if g.Status != coordinator.StatusRunning {
			continue
		}
		for k, at := range firstSeen {
			if at.Before(g.At.Add(-time.Second)) && k.Step > g.StartStep {
				r.fail("generation %d resumed from step %d although step %d was committed before it formed: a committed checkpoint was lost", g.Gen, g.StartStep, k.Step)
				break
			}
		}
	}
	r.note("%d polls (%d failed), %d generations, %d progress reports seen", tr.polls, tr.pollErrs, len(tr.gens), len(tr.points))
	r.MaxGap, r.MaxGapStep = tr.maxGap(soakAt)
	tr.mu.Unlock()
	if injected < nFaults {
		r.fail("%d of %d faults injected", injected, nFaults)
	}
	c.checkWorkerLogs(r, id, t0, gens, committed, firstSeen)
	c.checkCheckpoints(r, final, committed, firstSeen, soakAt)
	r.note("%d checkpoints seen committed during the soak; the ledger counts %.0f redone steps", len(committed), r.LedgerRedone)
	r.Pass = len(r.Failures) == 0

	table := soakTable(schedule)
	var b strings.Builder
	fmt.Fprintf(&b, "soak: seed %d, %d faults injected over %s (mean gap %s), job %s of %d steps in %s, suite %s\n\n",
		seed, injected, scheduleEnd.Sub(soakAt).Round(time.Second), gap, id, c.steps, r.JobWall.Round(time.Second), time.Since(suiteStart).Round(time.Second))
	b.WriteString(table)
	if c.netemFallback.Load() {
		b.WriteString("\n(netem: this kernel has no netem qdisc; the link was slowed with tbf at 20 Mbit/s and packets dropped with iptables' statistic match instead)\n")
	}
	fmt.Fprintf(&b, "\nfaults in order (start offset from the first fault, target, down, healed after, detect, resume, steps lost):\n")
	for _, f := range schedule {
		if f.Skipped != "" {
			fmt.Fprintf(&b, "  %2d %-18s skipped: %s\n", f.N, f.Kind, f.Skipped)
			continue
		}
		det, res := "-", "-"
		if f.Detected {
			det = f.Detect.Round(10 * time.Millisecond).String()
		}
		if f.Resumed {
			res = f.Resume.Round(10 * time.Millisecond).String()
		}
		from := ""
		if f.ResumedFrom != "" {
			from = " from " + f.ResumedFrom
		}
		fmt.Fprintf(&b, "  %2d %7s %-18s %-6s down %-6s healed %-7s detect %-7s resume %-7s lost %d%s%s\n", f.N,
			f.Start.Sub(soakAt).Round(100*time.Millisecond), f.Kind, f.Target, f.Down.Round(100*time.Millisecond),
			f.Healed.Sub(f.Start).Round(100*time.Millisecond), det, res, f.StepsLost, from, errNote(f.Err))
	}
	b.WriteString("\n" + workerKillReport(schedule))
	fmt.Printf("\n=== chaos soak ===\n%s\n", b.String())
	_ = os.WriteFile(filepath.Join(c.artifacts, "soak.txt"), []byte(b.String()), 0o644)
	if js, err := json.MarshalIndent(schedule, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(c.artifacts, "soak.json"), js, 0o644)
	}
	c.report([]*result{base, r}, suiteStart)
	if !r.Pass {
		c.saveLogs("compose-after-soak.log")
		t.Errorf("soak: %s", strings.Join(r.Failures, "\n  "))
	}
}
