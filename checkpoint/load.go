package checkpoint

import (
	"context"
	"errors"
	"fmt"
)

// LoadOptions tune LoadRange.
type LoadOptions struct {
	// SkipChecksums reads only the needed bytes of each shard with ReadAt
	// and does not hash shard data. Use it only right after Verify or
	// NewestValid checked the same manifest, e.g. when every worker loads
	// its own slice of a checkpoint NewestValid already verified. Size,
	// header checksum and metadata are checked either way.
	SkipChecksums bool
}

// LoadRange fills dst with the elements [lo,hi) of the checkpoint's flat
// vectors. Nil slices in dst are skipped (load parameters only, say); the
// others must have length hi-lo. The range may span several shards of m,
// which is how a job resumes with a different world size: each new worker
// loads its new range from whichever old shards cover it.
//
// Shards outside the range are not opened. Each shard used is read in one
// sequential pass that checks its sha256 and copies out the needed bytes,
// or, with SkipChecksums, only its needed bytes are read.
func (s *DirStore) LoadRange(ctx context.Context, m *Manifest, lo, hi int, dst State, opts LoadOptions) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := checkLoadArgs(m, lo, hi, dst); err != nil {
		return fmt.Errorf("load [%d,%d) of step %d: %w", lo, hi, m.Step, err)
	}
	for rank, sh := range m.Shards {
		a, b := max(lo, sh.Lo), min(hi, sh.Hi)
		if a >= b {
			continue
		}
		if err := s.loadFromShard(ctx, m, rank, a, b, subState(dst, a-lo, b-lo), opts); err != nil {
			return fmt.Errorf("load [%d,%d) from shard %d of step %d: %w", a, b, rank, m.Step, err)
		}
	}
	return nil
}

func checkLoadArgs(m *Manifest, lo, hi int, dst State) error {
	if lo < 0 || lo > hi || hi > m.Total {
		return fmt.Errorf("range is not inside [0,%d)", m.Total)
	}
	some := false
	for i, t := range dst.tensors() {
		if t == nil {
			continue
		}
		some = true
		if len(t) != hi-lo {
			return fmt.Errorf("destination %s has %d elements, the range needs %d", tensorNames()[i], len(t), hi-lo)
		}
	}
	if !some {
		return errors.New("no destination slices given")
	}
	return nil
}

func (s *DirStore) loadFromShard(ctx context.Context, m *Manifest, rank, lo, hi int, dst State, opts LoadOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sf, err := s.openManifestShard(m, rank)
	if err != nil {
		return err
	}
	defer sf.Close()
	wants, err := sf.stateWants(lo, hi, dst)
	if err != nil {
		return err
	}
	if !opts.SkipChecksums {
		return sf.scanData(ctx, wants)
	}
	for _, w := range wants {
		if err := sf.readWant(w); err != nil {
			return err
		}
	}
	return nil
}

// subState slices the non-nil members of st to [a,b), keeping nil ones nil.
func subState(st State, a, b int) State {
	cut := func(t []float32) []float32 {
		if t == nil {
			return nil
		}
		return t[a:b]
	}
	return State{Params: cut(st.Params), AdamM: cut(st.AdamM), AdamV: cut(st.AdamV)}
}
