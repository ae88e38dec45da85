package checkpoint

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func sampleManifest(t testing.TB) *Manifest {
	t.Helper()
	var shards []ShardInfo
	for r, rg := range evenRanges(10, 3) {
		shards = append(shards, ShardInfo{Rank: r, Lo: rg[0], Hi: rg[1], File: ShardFileName(r, 3),
			Bytes: 8 + 512 + 12*int64(rg[1]-rg[0]), HeaderSHA256: strings.Repeat("a", 64), DataSHA256: strings.Repeat("b", 64)})
	}
	// Out of order on purpose: NewManifest sorts by rank.
	shards[0], shards[2] = shards[2], shards[0]
	m, err := NewManifest("job", 100, 3, 10, json.RawMessage(testConfig), shards)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManifestRoundTrip(t *testing.T) {
	m := sampleManifest(t)
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("re-marshalled manifest differs:\n%s\n%s", b, b2)
	}
	if got.World != 3 || got.Shards[0].Rank != 0 || got.Shards[2].Hi != 10 || !sameJSON(got.Config, []byte(testConfig)) {
		t.Errorf("decoded %+v", got)
	}
}

func TestManifestRejectsInconsistency(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(m *Manifest)
		error string
	}{
		{"gap between ranges", func(m *Manifest) { m.Shards[1].Lo++ }, "no shard covers [4,5)"},
		{"overlapping ranges", func(m *Manifest) { m.Shards[1].Lo-- }, "overlaps"},
		{"short of total", func(m *Manifest) { m.Total = 11 }, "no shard covers [10,11)"},
		{"range past total", func(m *Manifest) { m.Shards[2].Hi = 12 }, "not inside"},
		{"ranks out of order", func(m *Manifest) { m.Shards[0].Rank, m.Shards[1].Rank = 1, 0 }, "rank order"},
		{"world disagrees", func(m *Manifest) { m.World = 4 }, "lists 3 shards for a world of 4"},
		{"no shards", func(m *Manifest) { m.Shards = nil }, "lists 0 shards"},
		{"file escapes directory", func(m *Manifest) { m.Shards[0].File = "../x.safetensors" }, "plain file name"},
		{"hidden file", func(m *Manifest) { m.Shards[0].File = ".tmp-x.safetensors" }, "plain file name"},
		{"shared file", func(m *Manifest) { m.Shards[1].File = m.Shards[0].File }, "share file"},
		{"impossible size", func(m *Manifest) { m.Shards[0].Bytes = 20 }, "impossible"},
		{"checksum not hex", func(m *Manifest) { m.Shards[0].DataSHA256 = strings.Repeat("G", 64) }, "hex"},
		{"checksum uppercase", func(m *Manifest) { m.Shards[0].HeaderSHA256 = strings.Repeat("A", 64) }, "hex"},
		{"negative step", func(m *Manifest) { m.Step = -1 }, "negative"},
		{"bad job", func(m *Manifest) { m.Job = "a b" }, "job name"},
		{"unknown version", func(m *Manifest) { m.Version = 2 }, "version 2"},
		{"config not JSON", func(m *Manifest) { m.Config = json.RawMessage("{x") }, "config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sampleManifest(t)
			tt.edit(m)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Fatalf("Validate = %v, want an error saying %q", err, tt.error)
			}
			if _, err := m.Marshal(); err == nil {
				t.Error("Marshal accepted an invalid manifest")
			}
		})
	}
}

func TestUnmarshalManifestIsStrict(t *testing.T) {
	good, err := sampleManifest(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"unknown field", bytes.Replace(good, []byte(`"job":`), []byte(`"jobb": 1, "job":`), 1)},
		{"trailing data", append(bytes.Clone(good), []byte("{}")...)},
		{"truncated", good[:len(good)/2]},
		{"empty", nil},
		{"wrong type", bytes.Replace(good, []byte(`"step": 100`), []byte(`"step": "100"`), 1)},
		{"invalid after decode", bytes.Replace(good, []byte(`"total": 10`), []byte(`"total": 9`), 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if bytes.Equal(tt.data, good) {
				t.Fatal("test case did not change the manifest")
			}
			if _, err := UnmarshalManifest(tt.data); err == nil {
				t.Fatal("UnmarshalManifest accepted it")
			}
		})
	}
}

func TestManifestAllowsEmptyShards(t *testing.T) {
	// More workers than elements: some own nothing.
	var shards []ShardInfo
	for r, rg := range evenRanges(2, 4) {
		shards = append(shards, ShardInfo{Rank: r, Lo: rg[0], Hi: rg[1], File: ShardFileName(r, 4),
			Bytes: 600, HeaderSHA256: strings.Repeat("a", 64), DataSHA256: strings.Repeat("b", 64)})
	}
	if _, err := NewManifest("job", 1, 0, 2, nil, shards); err != nil {
		t.Fatal(err)
	}
}
