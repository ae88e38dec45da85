package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Files of an export directory.
const (
	WeightsFile = "model.safetensors"
	ConfigFile  = "config.json"
)

// Result describes a finished export.
type Result struct {
	Dir     string `json:"dir"`
	Source  Source `json:"source"`
	Tensors int    `json:"tensors"`
	Params  int    `json:"params"`
	Bytes   int64  `json:"bytes"` // size of model.safetensors
}

// Write writes the export of params (laid out for cfg.Config) to the
// directory out. It builds the directory under a temporary name beside
// out, fsyncs every file and the directory, and renames it into place, so
// that out is either absent or complete: a reader never sees half an
// export. out must not exist, or be an empty directory.
func Write(ctx context.Context, out string, cfg Config, params []float32) (res Result, err error) {
	tensors, err := Tensors(cfg.Config, params)
	if err != nil {
		return Result{}, err
	}
	if err := checkTarget(out); err != nil {
		return Result{}, err
	}
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-export-"+filepath.Base(out)+"-")
	if err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes the directory 0700; an export is meant to be shared.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return Result{}, fmt.Errorf("encode %s: %w", ConfigFile, err)
	}
	cfgJSON = append(cfgJSON, '\n')
	compact, err := json.Marshal(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("encode %s: %w", ConfigFile, err)
	}
	// The weights file repeats the config so that it describes itself
	// when copied away from its directory.
	meta := map[string]string{
		"format":         FormatName,
		"format_version": fmt.Sprint(FormatVersion),
		"config":         string(compact),
	}
	weights := filepath.Join(tmp, WeightsFile)
	if err := writeFile(weights, func(w io.Writer) error { return WriteSafetensors(w, tensors, meta) }); err != nil {
		return Result{}, err
	}
	if err := writeFile(filepath.Join(tmp, ConfigFile), func(w io.Writer) error {
		_, err := w.Write(cfgJSON)
		return err
	}); err != nil {
		return Result{}, err
	}
	if err := syncDir(tmp); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	// Go's Rename will not replace a directory, even an empty one, and
	// checkTarget allowed only an empty one: os.Remove removes nothing else.
	if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return Result{}, fmt.Errorf("export: rename %s to %s: %w", tmp, out, err)
	}
	if err := syncDir(parent); err != nil {
		return Result{}, err
	}
	st, err := os.Stat(filepath.Join(out, WeightsFile))
	if err != nil {
		return Result{}, fmt.Errorf("export to %s: %w", out, err)
	}
	return Result{Dir: out, Source: cfg.Source, Tensors: len(tensors), Params: len(params), Bytes: st.Size()}, nil
}

// checkTarget refuses to replace an existing export or anything else at
// out; an empty directory is fine (Write replaces it).
func checkTarget(out string) error {
	st, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("export to %s: %w", out, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("export to %s: a file is in the way; choose another --out", out)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("export to %s: %w", out, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("export to %s: the directory is not empty; remove it or choose another --out", out)
	}
	return nil
}

// writeFile creates path with what write produces and fsyncs it.
func writeFile(path string, write func(io.Writer) error) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so that the entries made in it survive a crash.
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
