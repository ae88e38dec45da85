package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ShardProblem is what is wrong with one shard of a checkpoint.
type ShardProblem struct {
	Rank int
	Path string
	Err  error
}

// VerifyError lists every damaged shard of one checkpoint.
type VerifyError struct {
	Job        string
	Step       int64
	Generation uint64
	Problems   []ShardProblem
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint job %q step %d generation %d: %d of its shards failed verification", e.Job, e.Step, e.Generation, len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  rank %d: %v", p.Rank, p.Err)
	}
	return b.String()
}

// Unwrap exposes the per-shard errors to errors.Is and errors.As.
func (e *VerifyError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p.Err
	}
	return errs
}

// Verify checks every shard of m: it exists, has the recorded size and
// header checksum, its metadata matches the manifest, and its data matches
// its sha256. It reads every byte of the checkpoint. A damaged checkpoint
// gives a *VerifyError naming every bad shard; a cancelled ctx gives
// ctx.Err().
func (s *DirStore) Verify(ctx context.Context, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	var problems []ShardProblem
	for rank := range m.Shards {
		err := s.verifyShard(ctx, m, rank)
		if err == nil {
			continue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("verify step %d: %w", m.Step, ctxErr)
		}
		problems = append(problems, ShardProblem{Rank: rank, Path: s.ShardPath(m, rank), Err: err})
	}
	if len(problems) > 0 {
		return &VerifyError{Job: m.Job, Step: m.Step, Generation: m.Generation, Problems: problems}
	}
	return nil
}

func (s *DirStore) verifyShard(ctx context.Context, m *Manifest, rank int) error {
	sf, err := s.openManifestShard(m, rank)
	if err != nil {
		return err
	}
	defer sf.Close()
	return sf.VerifyData(ctx)
}

// openManifestShard opens the shard of rank and checks everything about it
// that does not need the data: size, header checksum, metadata.
func (s *DirStore) openManifestShard(m *Manifest, rank int) (*ShardFile, error) {
	s.reads.Add(1)
	path := s.ShardPath(m, rank)
	want := m.Shards[rank]
	// Stat first so that a truncated file is reported as such, even when the
	// cut also breaks the header.
	if st, err := os.Stat(path); err == nil && st.Size() != want.Bytes {
		how := "truncated"
		if st.Size() > want.Bytes {
			how = "grown"
		}
		return nil, corrupt(path, fixFallBack, "file is %d bytes but the manifest records %d (%s)", st.Size(), want.Bytes, how)
	}
	sf, err := OpenShard(path)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (*ShardFile, error) {
		sf.Close()
		return nil, corrupt(path, fixFallBack, format, args...)
	}
	if sf.HeaderSHA256() != want.HeaderSHA256 {
		return fail("header sha256 is %s but the manifest records %s (header corrupted or replaced)", sf.HeaderSHA256(), want.HeaderSHA256)
	}
	if d := sf.Meta().mismatch(m.ShardMeta(rank)); d != "" {
		return fail("%s", d)
	}
	if sf.DataSHA256() != want.DataSHA256 {
		return fail("header records data sha256 %s but the manifest records %s", sf.DataSHA256(), want.DataSHA256)
	}
	return sf, nil
}

// Skipped is a committed checkpoint that NewestValid passed over, and why.
type Skipped struct {
	Step       int64
	Generation uint64
	Err        error
}

func (s Skipped) String() string {
	return fmt.Sprintf("step %d generation %d skipped: %v", s.Step, s.Generation, s.Err)
}

// NewestValid returns the first manifest of committed (newest first, in
// commit order as the raft log has them) that verifies, and a report of the
// newer ones it skipped. If none verifies the error wraps
// ErrNoValidCheckpoint and the report lists every one.
func (s *DirStore) NewestValid(ctx context.Context, committed []*Manifest) (*Manifest, []Skipped, error) {
	var skipped []Skipped
	for i, m := range committed {
		if m == nil {
			skipped = append(skipped, Skipped{Err: fmt.Errorf("committed manifest %d is nil", i)})
			continue
		}
		err := s.Verify(ctx, m)
		if err == nil {
			return m, skipped, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, skipped, ctxErr
		}
		skipped = append(skipped, Skipped{Step: m.Step, Generation: m.Generation, Err: err})
	}
	errs := []error{ErrNoValidCheckpoint}
	for _, sk := range skipped {
		errs = append(errs, errors.New(sk.String()))
	}
	return nil, skipped, fmt.Errorf("find newest valid checkpoint among %d committed: %w", len(committed), errors.Join(errs...))
}
