package train

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/modcoord/modcoord/atomicfile"
	"github.com/modcoord/modcoord/checkpoint"
)

// DiLoCo checkpoints are taken at outer boundaries only (jobspec refuses a
// checkpoint_every that is not a multiple of inner_steps). There the
// parameters are global, so the shards hold what every-step checkpoints
// hold (each rank's range of the parameters, and the outer momentum in the
// first-moment slot), and only each rank's inner AdamW state is its own.
// That state goes into one extra file per rank in the step directory,
// written before the rank reports its shard, so a committed step has all
// of them; retention deletes it with the directory. Resuming with the same
// world restores every rank's file and continues bit for bit; with another
// world there is no rank-to-rank mapping, so the inner moments start from
// zero (the round is redone from the global state either way). A worker
// lost mid-round loses only that round: the next generation resumes from
// the last checkpoint, at most checkpoint_every steps back.

var innerMagic = [8]byte{'M', 'C', 'D', 'L', 'I', 'N', 'R', '1'}

// innerHeaderSize: magic, rank, world, step, n, sha256 of the payload.
const innerHeaderSize = 8 + 4 + 4 + 8 + 8 + sha256.Size

// InnerStateFile is the name of rank's inner-state file among world ranks.
func InnerStateFile(rank, world int) string {
	return fmt.Sprintf("diloco-inner-rank-%05d-of-%05d.bin", rank, world)
}

// SaveRankState writes what a checkpoint of this rank needs beyond its
// shard: in DiLoCo the inner AdamW moments, atomically, into the step
// directory of (job, current step, generation). It does nothing when
// syncing every step. Call it before reporting the shard.
func (t *Trainer) SaveRankState(store *checkpoint.DirStore, job string, generation uint64) error {
	if t.dl == nil {
		return nil
	}
	dir := store.StepDir(job, t.step, generation)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("checkpoint step %d: DiLoCo inner state: %w", t.step, err)
	}
	for _, v := range [][]float32{t.opt.M, t.opt.V} {
		for _, x := range v {
			if f := float64(x); !finite(f) {
				return &NonFiniteError{Step: t.step, What: "an inner AdamW moment", Value: f}
			}
		}
	}
	h := sha256.New()
	writeFloats(h, t.opt.M)
	writeFloats(h, t.opt.V)
	var hdr [innerHeaderSize]byte
	copy(hdr[:8], innerMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], uint32(t.cfg.Rank))
	binary.LittleEndian.PutUint32(hdr[12:], uint32(t.cfg.World))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(t.step))
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(t.opt.M)))
	copy(hdr[32:], h.Sum(nil))
	path := filepath.Join(dir, InnerStateFile(t.cfg.Rank, t.cfg.World))
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		bw.Write(hdr[:])
		writeFloats(bw, t.opt.M)
		writeFloats(bw, t.opt.V)
		return bw.Flush()
	})
}

// InnerStateRestored reports whether the last Restore found this rank's
// inner AdamW state (DiLoCo); false means the moments restarted at zero.
func (t *Trainer) InnerStateRestored() bool { return t.dl != nil && t.dl.innerRestored }

// restoreDiLoCo loads the outer momentum of this rank's range and, when
// the checkpoint was written by the same world, this rank's inner state.
func (t *Trainer) restoreDiLoCo(ctx context.Context, store *checkpoint.DirStore, m *checkpoint.Manifest, opts checkpoint.LoadOptions) error {
	d := t.dl
	if err := store.LoadRange(ctx, m, d.outer.Lo, d.outer.Hi, checkpoint.State{AdamM: d.outer.M, AdamV: d.zeros}, opts); err != nil {
		return fmt.Errorf("restore outer momentum of step %d: %w", m.Step, err)
	}
	clear(d.zeros)
	clear(t.opt.M)
	clear(t.opt.V)
	d.innerRestored = false
	t.step = m.Step
	// A checkpoint holds global parameters, so the next round starts from
	// them even when m.Step is not a boundary of this run's rounds (a
	// final short round, another total): stepDiLoCo copies them only at
	// boundaries, and an outer step against a stale global would be wrong.
	copy(d.global, t.model.Params())
	if m.World != t.cfg.World {
		return nil
	}
	path := filepath.Join(store.StepDir(m.Job, m.Step, m.Generation), InnerStateFile(t.cfg.Rank, t.cfg.World))
	if err := t.loadInnerState(path, m.Step); err != nil {
		return fmt.Errorf("restore step %d: %w", m.Step, err)
	}
	d.innerRestored = true
	return nil
}

// loadInnerState reads an inner-state file into the AdamW moments after
// checking its size, header and checksum; on error the moments are zero.
func (t *Trainer) loadInnerState(path string, step int64) (err error) {
	defer func() {
		if err != nil {
			clear(t.opt.M)
			clear(t.opt.V)
		}
	}()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("DiLoCo inner state: %w", err)
	}
	defer f.Close()
	n := len(t.opt.M)
	want := int64(innerHeaderSize) + 8*int64(n)
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("DiLoCo inner state %s: %w", path, err)
	} else if st.Size() != want {
		return fmt.Errorf("DiLoCo inner state %s: %d bytes, a model of %d parameters needs %d", path, st.Size(), n, want)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr [innerHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("DiLoCo inner state %s: %w", path, err)
	}
	rank, world := binary.LittleEndian.Uint32(hdr[8:]), binary.LittleEndian.Uint32(hdr[12:])
	gotStep, gotN := int64(binary.LittleEndian.Uint64(hdr[16:])), binary.LittleEndian.Uint64(hdr[24:])
	switch {
	case !bytes.Equal(hdr[:8], innerMagic[:]):
		return fmt.Errorf("DiLoCo inner state %s: not an inner-state file (magic %q)", path, hdr[:8])
	case int(rank) != t.cfg.Rank || int(world) != t.cfg.World || gotStep != step || gotN != uint64(n):
		return fmt.Errorf("DiLoCo inner state %s: written by rank %d of %d at step %d for %d parameters, want rank %d of %d, step %d, %d", path, rank, world, gotStep, gotN, t.cfg.Rank, t.cfg.World, step, n)
	}
	// Hash the payload as it is read, not in a second pass over it.
	h := sha256.New()
	payload := io.TeeReader(r, h)
	if err := readFloats(payload, t.opt.M); err != nil {
		return fmt.Errorf("DiLoCo inner state %s: %w", path, err)
	}
	if err := readFloats(payload, t.opt.V); err != nil {
		return fmt.Errorf("DiLoCo inner state %s: %w", path, err)
	}
	if !bytes.Equal(h.Sum(nil), hdr[32:]) {
		return errors.New("DiLoCo inner state " + path + ": checksum mismatch, the file is damaged")
	}
	return nil
}

// writeFloats writes v little-endian, 4 KiB at a time.
func writeFloats(w io.Writer, v []float32) {
	var buf [4096]byte
	for len(v) > 0 {
		n := min(len(v), len(buf)/4)
		for i, x := range v[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		w.Write(buf[:4*n])
		v = v[n:]
	}
}

func readFloats(r io.Reader, v []float32) error {
	var buf [4096]byte
	for len(v) > 0 {
		n := min(len(v), len(buf)/4)
		if _, err := io.ReadFull(r, buf[:4*n]); err != nil {
			return err
		}
		for i := range v[:n] {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		v = v[n:]
	}
	return nil
}
