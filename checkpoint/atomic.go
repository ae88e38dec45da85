package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeAtomic creates dir/name with the content write produces. It writes a
// temp file in the same directory (so rename cannot cross file systems),
// fsyncs it, renames it over name and fsyncs the directory so that the
// rename itself is durable. A crash leaves the old file, the new one or a
// stray temp file, never a partly written name. ctx is checked before the
// rename so that an aborted checkpoint does not land.
func writeAtomic(ctx context.Context, dir, name string, write func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(dir, tempPrefix+name+".*")
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", name, err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	// CreateTemp uses 0600; checkpoints are meant to be read by other tools.
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	closed = true
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = ctx.Err(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	final := filepath.Join(dir, name)
	if err = os.Rename(tmp, final); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, final, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so that entries created or renamed in it
// survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// mkdirDurable creates dir and any missing parents (not looking above
// stop, which must exist; "" for no limit), fsyncing the parent of each
// directory it creates so that files made durable inside survive a crash.
// A directory that already exists is left alone: whoever created it synced
// its parent before writing into it, and a checkpoint commits only once
// every shard writer, the creator included, has reported.
func mkdirDurable(dir, stop string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("create directory %s: a file is in the way", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if dir != stop && parent != dir {
		if err := mkdirDurable(parent, stop); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // created concurrently by another writer
		}
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return syncDir(parent)
}
