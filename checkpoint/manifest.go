package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ManifestVersion is the version of the manifest JSON schema.
const ManifestVersion = 1

// maxManifestBytes bounds a manifest read from disk: about 300 bytes per
// shard leaves room for a few hundred thousand shards and a large config.
const maxManifestBytes = 64 << 20

// MaxConfigBytes bounds a manifest's opaque config: the model's shape and
// its tensor layout are a few kilobytes even for deep models.
const MaxConfigBytes = 1 << 20

// ShardInfo is what a worker reports after its shard is durable, and what
// the manifest records per shard.
//
// The two checksums together cover every byte of the file. The file as a
// whole is not hashed because its header embeds the data checksum, so a
// whole-file hash would need a second pass over the data.
type ShardInfo struct {
	Rank int    `json:"rank"`
	Lo   int    `json:"lo"`
	Hi   int    `json:"hi"`
	File string `json:"file"` // name inside the step directory
	// Bytes is the file size.
	Bytes int64 `json:"bytes"`
	// HeaderSHA256 is the sha256 of the first 8+N bytes (length and JSON header).
	HeaderSHA256 string `json:"header_sha256"`
	// DataSHA256 is the sha256 of the data section, also recorded in the
	// shard's own metadata.
	DataSHA256 string `json:"data_sha256"`
}

// Manifest describes one committed checkpoint. It is what the coordinator
// commits through raft and also what is written as MANIFEST.json.
type Manifest struct {
	Version    int    `json:"version"`
	Job        string `json:"job"`
	Step       int64  `json:"step"`
	Generation uint64 `json:"generation"`
	World      int    `json:"world"`
	Total      int    `json:"total"`
	// Config is opaque JSON from the caller, the same for every shard. By
	// convention it holds the tensor layout under "layout" (see
	// docs/checkpoints.md).
	Config json.RawMessage `json:"config,omitempty"`
	Shards []ShardInfo     `json:"shards"` // in rank order
}

// NewManifest builds and validates the manifest of a checkpoint from the
// shard reports of all its workers, in any order.
func NewManifest(job string, step int64, generation uint64, total int, config json.RawMessage, shards []ShardInfo) (*Manifest, error) {
	sorted := append([]ShardInfo(nil), shards...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rank < sorted[j].Rank })
	m := &Manifest{
		Version: ManifestVersion, Job: job, Step: step, Generation: generation,
		World: len(sorted), Total: total, Config: config, Shards: sorted,
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Clone is a deep copy of m (nil for nil): the coordinator's state machine
// hands out copies so that no reader aliases its records.
func (m *Manifest) Clone() *Manifest {
	if m == nil {
		return nil
	}
	c := *m
	c.Config = bytes.Clone(m.Config)
	c.Shards = append([]ShardInfo(nil), m.Shards...)
	return &c
}

// ShardMeta returns what the shard of the given rank must say about itself.
func (m *Manifest) ShardMeta(rank int) ShardMeta {
	s := m.Shards[rank]
	return ShardMeta{
		Job: m.Job, Step: m.Step, Generation: m.Generation, Rank: s.Rank, World: m.World,
		Lo: s.Lo, Hi: s.Hi, Total: m.Total, Config: m.Config,
	}
}

// Validate checks that m is internally consistent: the shards are ranks
// 0..World-1 in order, their ranges tile [0,Total) exactly, and sizes,
// names and checksums are well-formed.
func (m *Manifest) Validate() error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("manifest of job %q step %d generation %d: %w", m.Job, m.Step, m.Generation, err)
	}
	return nil
}

func (m *Manifest) validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("version %d, this reader understands %d", m.Version, ManifestVersion)
	}
	if err := checkJobName(m.Job); err != nil {
		return err
	}
	switch {
	case m.Step < 0:
		return fmt.Errorf("step %d is negative", m.Step)
	case m.World < 1:
		return fmt.Errorf("world size %d must be at least 1", m.World)
	case len(m.Shards) != m.World:
		return fmt.Errorf("lists %d shards for a world of %d", len(m.Shards), m.World)
	case m.Total < 1 || int64(m.Total) > maxElems:
		return fmt.Errorf("total %d must be in [1,%d]", m.Total, int64(maxElems))
	case len(m.Config) > 0 && !json.Valid(m.Config):
		return errors.New("config is not valid JSON")
	}
	files := map[string]int{}
	for i, s := range m.Shards {
		if s.Rank != i {
			return fmt.Errorf("shard %d has rank %d; shards must be listed once each, in rank order", i, s.Rank)
		}
		if s.Hi > m.Total {
			return fmt.Errorf("shard %d range [%d,%d) is not inside [0,%d)", i, s.Lo, s.Hi, m.Total)
		}
		if err := s.Validate(); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		if other, dup := files[s.File]; dup {
			return fmt.Errorf("shards %d and %d share file %q", other, i, s.File)
		}
		files[s.File] = i
	}
	return checkTiling(m.Total, m.Shards)
}

// Validate checks one shard's record on its own: a range, a plain file
// name, a size possible for the range, and well-formed checksums. The
// coordinator runs it on every report before the record enters raft.
func (s ShardInfo) Validate() error {
	if s.Rank < 0 || s.Lo < 0 || s.Lo > s.Hi || int64(s.Hi) > maxElems {
		return fmt.Errorf("rank %d range [%d,%d) is not a range of at most %d elements", s.Rank, s.Lo, s.Hi, int64(maxElems))
	}
	if err := checkShardFileName(s.File); err != nil {
		return err
	}
	data := 12 * int64(s.Hi-s.Lo)
	if s.Bytes < 8+2+data || s.Bytes > 8+MaxHeaderBytes+data {
		return fmt.Errorf("size %d bytes is impossible for %d elements", s.Bytes, s.Hi-s.Lo)
	}
	if !isSHA256Hex(s.HeaderSHA256) || !isSHA256Hex(s.DataSHA256) {
		return errors.New("checksums must be 64 lowercase hex digits")
	}
	return nil
}

// checkTiling checks that the shard ranges cover [0,total) exactly once.
func checkTiling(total int, shards []ShardInfo) error {
	byLo := append([]ShardInfo(nil), shards...)
	sort.SliceStable(byLo, func(i, j int) bool {
		if byLo[i].Lo != byLo[j].Lo {
			return byLo[i].Lo < byLo[j].Lo
		}
		return byLo[i].Hi < byLo[j].Hi
	})
	pos := 0
	for _, s := range byLo {
		switch {
		case s.Lo > pos:
			return fmt.Errorf("no shard covers [%d,%d)", pos, s.Lo)
		case s.Lo < pos:
			return fmt.Errorf("shard %d range [%d,%d) overlaps another shard", s.Rank, s.Lo, s.Hi)
		}
		pos = s.Hi
	}
	if pos != total {
		return fmt.Errorf("no shard covers [%d,%d)", pos, total)
	}
	return nil
}

// Marshal validates m and encodes it as indented JSON.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// UnmarshalManifest decodes and validates a manifest. Unknown fields and
// trailing data are errors: a manifest decides what gets loaded, so nothing
// in it may be silently ignored.
func UnmarshalManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, over the %d-byte limit", len(data), maxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
