package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Prune keeps the newest keep committed checkpoints of job and deletes
// older ones. committed is newest first, in commit order as the raft log
// has them; being in it means the checkpoint is durable (all shards were
// fsynced before the commit). Prune returns the directories it removed.
//
// It deletes conservatively:
//   - keep must be at least 1, so the newest commit is never deleted, and
//     an old checkpoint goes only once a newer one is committed.
//   - Before deleting anything it checks (stat only) that every shard of
//     the newest commit exists with its recorded size, so pruning never
//     removes the fallbacks of a checkpoint whose files are gone.
//   - Committed checkpoints beyond the first keep are deleted.
//   - Any other step directory (an abandoned attempt, or a commit older than
//     the list) is deleted only if its step is older than every kept
//     checkpoint and its generation is not newer than theirs. Anything else
//     may be a two-phase commit still in flight and is left alone.
func (s *DirStore) Prune(ctx context.Context, job string, committed []*Manifest, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune job %q: keep must be at least 1, got %d", job, keep)
	}
	if len(committed) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	for i, m := range committed {
		if m == nil {
			return nil, fmt.Errorf("prune job %q: committed manifest %d is nil", job, i)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("prune job %q: %w", job, err)
		}
		if m.Job != job {
			return nil, fmt.Errorf("prune job %q: committed manifest %d is of job %q", job, i, m.Job)
		}
		dir := s.StepDir(m.Job, m.Step, m.Generation)
		if seen[dir] {
			return nil, fmt.Errorf("prune job %q: step %d generation %d is listed twice", job, m.Step, m.Generation)
		}
		seen[dir] = true
	}
	if err := s.checkShardsPresent(committed[0]); err != nil {
		return nil, fmt.Errorf("prune job %q: newest commit (step %d) is not intact, deleting nothing: %w", job, committed[0].Step, err)
	}

	kept := committed[:min(keep, len(committed))]
	keptDirs := map[string]bool{}
	oldestKeptStep, newestKeptGen := kept[0].Step, kept[0].Generation
	for _, m := range kept {
		keptDirs[s.StepDir(m.Job, m.Step, m.Generation)] = true
		oldestKeptStep = min(oldestKeptStep, m.Step)
		newestKeptGen = max(newestKeptGen, m.Generation)
	}
	var doomed []string
	for _, m := range committed[len(kept):] {
		doomed = append(doomed, s.StepDir(m.Job, m.Step, m.Generation))
	}
	onDisk, err := s.Steps(job)
	if err != nil {
		return nil, fmt.Errorf("prune job %q: %w", job, err)
	}
	for _, d := range onDisk {
		if !seen[d.Path] && d.Step < oldestKeptStep && d.Generation <= newestKeptGen {
			doomed = append(doomed, d.Path)
		}
	}

	var removed []string
	for _, dir := range doomed {
		if keptDirs[dir] {
			continue // unreachable given the checks above; deleting a kept dir must be impossible
		}
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("prune job %q: %w", job, err)
		}
		if err := removeStepDir(dir); err != nil {
			return removed, fmt.Errorf("prune job %q: %w", job, err)
		}
		removed = append(removed, dir)
	}
	if len(removed) > 0 {
		if err := syncDir(filepath.Join(s.root, job)); err != nil {
			return removed, fmt.Errorf("prune job %q: %w", job, err)
		}
	}
	return removed, nil
}

// checkShardsPresent stats every shard of m.
func (s *DirStore) checkShardsPresent(m *Manifest) error {
	for rank, sh := range m.Shards {
		path := s.ShardPath(m, rank)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if st.Size() != sh.Bytes {
			return corrupt(path, fixFallBack, "file is %d bytes but the manifest records %d", st.Size(), sh.Bytes)
		}
	}
	return nil
}

// removeStepDir deletes a step directory, manifest first: if the process
// dies midway, what remains no longer claims to be a committed checkpoint.
func removeStepDir(dir string) error {
	if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove manifest of %s: %w", dir, err)
	}
	if err := syncDir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
