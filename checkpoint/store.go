package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Names of things on disk. They are part of the format: changing them
// strands existing checkpoints.
const (
	// ManifestFile is the committed manifest inside a step directory. Its
	// presence means the raft leader committed the step.
	ManifestFile = "MANIFEST.json"
	shardSuffix  = ".safetensors"
	// tempPrefix marks files being written; a crash can leave them behind
	// and they are never mistaken for shards or manifests.
	tempPrefix = ".tmp-"
	maxJobName = 128
)

// ShardFileName is the file name of rank's shard in a world of n workers,
// e.g. "rank-00003-of-00008.safetensors". Zero padding makes ls sort ranks.
func ShardFileName(rank, world int) string {
	return fmt.Sprintf("rank-%05d-of-%05d%s", rank, world, shardSuffix)
}

// stepDirName names the directory of one checkpoint attempt. The generation
// is part of the name so that a step re-checkpointed after a rollback (same
// step, newer generation) never overwrites the files of the earlier commit.
func stepDirName(step int64, generation uint64) string {
	return fmt.Sprintf("step-%010d-gen-%d", step, generation)
}

// parseStepDirName is the inverse of stepDirName; it accepts only the exact
// form stepDirName produces so that stray directories are ignored.
func parseStepDirName(name string) (step int64, generation uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "step-")
	if !found {
		return 0, 0, false
	}
	stepText, genText, found := strings.Cut(rest, "-gen-")
	if !found {
		return 0, 0, false
	}
	step, err := strconv.ParseInt(stepText, 10, 64)
	if err != nil || step < 0 {
		return 0, 0, false
	}
	generation, err = strconv.ParseUint(genText, 10, 64)
	if err != nil || stepDirName(step, generation) != name {
		return 0, 0, false
	}
	return step, generation, true
}

// checkJobName rejects job names that are unsafe as a path component.
func checkJobName(job string) error {
	if job == "" || len(job) > maxJobName {
		return fmt.Errorf("job name %q must be 1 to %d characters", job, maxJobName)
	}
	if job[0] == '.' {
		return fmt.Errorf("job name %q must not start with '.'", job)
	}
	for _, c := range job {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("job name %q may only use letters, digits, '-', '_' and '.'", job)
		}
	}
	return nil
}

// checkShardFileName rejects manifest file names that could escape the step
// directory or are not shards.
func checkShardFileName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name[0] == '.' || !strings.HasSuffix(name, shardSuffix) {
		return fmt.Errorf("shard file name %q must be a plain file name ending in %s", name, shardSuffix)
	}
	return nil
}

// DirStore keeps checkpoints in a directory tree on a local disk or a
// shared volume. Besides the root it holds only a pool of write buffers, so
// one value may be used from many goroutines, and many processes may share
// one root: every file is written under a name that only one writer
// produces.
type DirStore struct {
	root     string
	buffered bool        // never use direct I/O
	bufs     *bufferPool // write pipeline buffers, shared by concurrent writes
	// reads counts the shard files opened for reading (loads and
	// verifications), shared by the store's copies.
	reads *atomic.Int64
}

// NewDirStore returns a store rooted at root, creating the directory.
func NewDirStore(root string) (*DirStore, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("checkpoint store root %q: %w", root, err)
	}
	if err := mkdirDurable(abs, ""); err != nil {
		return nil, fmt.Errorf("checkpoint store root: %w", err)
	}
	return &DirStore{root: abs, bufs: newBufferPool(2*pipeDepth, pipeBufSize), reads: new(atomic.Int64)}, nil
}

// ShardReads is how many shard files the store (and its copies) opened
// for reading: loads and verifications.
func (s *DirStore) ShardReads() int64 { return s.reads.Load() }

// WithBufferedIO returns a store on the same root that writes through the
// page cache instead of with direct I/O. Direct I/O is the default on Linux
// because it halves the CPU cost of a checkpoint and keeps it from flushing
// the page cache; writes fall back to buffered I/O by themselves where the
// file system rejects it. Use this where a file system accepts direct I/O
// but handles it badly.
func (s *DirStore) WithBufferedIO() *DirStore {
	c := *s
	c.buffered = true
	return &c
}

// Root is the store's root directory.
func (s *DirStore) Root() string { return s.root }

// StepDir is the directory of one checkpoint attempt.
func (s *DirStore) StepDir(job string, step int64, generation uint64) string {
	return filepath.Join(s.root, job, stepDirName(step, generation))
}

// ShardPath is where the manifest's shard of the given rank lives. m must
// be valid.
func (s *DirStore) ShardPath(m *Manifest, rank int) string {
	return filepath.Join(s.StepDir(m.Job, m.Step, m.Generation), m.Shards[rank].File)
}

// WriteShard writes one worker's shard durably (phase one of the commit)
// and returns the report the worker sends to the coordinator. st must not
// change until WriteShard returns.
func (s *DirStore) WriteShard(ctx context.Context, meta ShardMeta, st State) (ShardInfo, error) {
	if err := meta.Validate(); err != nil {
		return ShardInfo{}, fmt.Errorf("write shard: %w", err)
	}
	if err := st.checkLen(meta.Len()); err != nil {
		return ShardInfo{}, fmt.Errorf("write shard %d of step %d: %w", meta.Rank, meta.Step, err)
	}
	dir := s.StepDir(meta.Job, meta.Step, meta.Generation)
	if err := mkdirDurable(dir, s.root); err != nil {
		return ShardInfo{}, fmt.Errorf("write shard %d of step %d: %w", meta.Rank, meta.Step, err)
	}
	name := ShardFileName(meta.Rank, meta.World)
	var sums shardSums
	err := writeAtomic(ctx, dir, name, func(f *os.File) error {
		var err error
		sums, err = writeShardFile(ctx, f, meta, st, s.bufs, !s.buffered)
		return err
	})
	if err != nil {
		return ShardInfo{}, fmt.Errorf("write shard %d of step %d: %w", meta.Rank, meta.Step, err)
	}
	return ShardInfo{
		Rank: meta.Rank, Lo: meta.Lo, Hi: meta.Hi, File: name, Bytes: sums.bytes,
		HeaderSHA256: sums.headerSHA256, DataSHA256: sums.dataSHA256,
	}, nil
}

// WriteManifest writes m as MANIFEST.json in its step directory, atomically.
// The coordinator calls it after raft committed m, so that the directory
// alone says which steps are committed (for people and for Python).
func (s *DirStore) WriteManifest(ctx context.Context, m *Manifest) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	dir := s.StepDir(m.Job, m.Step, m.Generation)
	if err := mkdirDurable(dir, s.root); err != nil {
		return fmt.Errorf("write manifest of step %d: %w", m.Step, err)
	}
	err = writeAtomic(ctx, dir, ManifestFile, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("write manifest of step %d: %w", m.Step, err)
	}
	return nil
}

// ReadManifest reads and validates the MANIFEST.json of a step directory.
func (s *DirStore) ReadManifest(job string, step int64, generation uint64) (*Manifest, error) {
	path := filepath.Join(s.StepDir(job, step, generation), ManifestFile)
	m, err := ReadManifestFile(path)
	if err != nil {
		return nil, err
	}
	if m.Job != job || m.Step != step || m.Generation != generation {
		return nil, corrupt(path, fixFallBack, "manifest is for job %q step %d generation %d, not the directory it is in", m.Job, m.Step, m.Generation)
	}
	return m, nil
}

// ReadManifestFile reads and validates a MANIFEST.json. It refuses
// anything but a regular file before reading (a FIFO would block, a device
// never end) and reads at most maxManifestBytes.
func ReadManifestFile(path string) (*Manifest, error) {
	// O_NONBLOCK: opening a FIFO with no writer must not hang.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, &CorruptError{Path: path, Problem: fmt.Sprintf("not a regular file (%s)", st.Mode().Type()), Fix: fixFallBack}
	}
	if st.Size() > maxManifestBytes {
		return nil, &CorruptError{Path: path, Problem: fmt.Sprintf("%d bytes, over the %d-byte limit", st.Size(), maxManifestBytes), Fix: fixFallBack}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	m, err := UnmarshalManifest(b)
	if err != nil {
		return nil, &CorruptError{Path: path, Problem: err.Error(), Fix: fixFallBack}
	}
	return m, nil
}

// StepDirInfo describes one step directory found on disk.
type StepDirInfo struct {
	Step       int64
	Generation uint64
	Path       string
	// HasManifest says MANIFEST.json exists, i.e. the step was committed
	// (the manifest is written only after the raft commit).
	HasManifest bool
}

// Steps lists the step directories of job, oldest step first (then
// generation). Other entries are ignored. A job with no directory has none.
func (s *DirStore) Steps(job string) ([]StepDirInfo, error) {
	if err := checkJobName(job); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, job))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list steps of job %q: %w", job, err)
	}
	var out []StepDirInfo
	for _, e := range entries {
		step, gen, ok := parseStepDirName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		path := filepath.Join(s.root, job, e.Name())
		_, statErr := os.Stat(filepath.Join(path, ManifestFile))
		out = append(out, StepDirInfo{Step: step, Generation: gen, Path: path, HasManifest: statErr == nil})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Step != out[j].Step {
			return out[i].Step < out[j].Step
		}
		return out[i].Generation < out[j].Generation
	})
	return out, nil
}
