package checkpoint

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// FuzzManifest feeds arbitrary bytes to the manifest decoder, which
// decides what a restore loads. Whatever the input, UnmarshalManifest must
// not panic or allocate beyond a fixed multiple of the input; anything it
// accepts must validate, encode to a manifest that decodes to the same,
// and describe shards whose metadata validates; ReadManifestFile must
// accept exactly what UnmarshalManifest accepts. Run it with
//
//	go test ./checkpoint -run '^$' -fuzz '^FuzzManifest$' -fuzztime 1000000x -parallel 2
func FuzzManifest(f *testing.F) {
	good, err := sampleManifest(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(append(bytes.Clone(good), "{}"...))
	f.Add(bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 1, "extra": 0`), 1))
	f.Add(bytes.Replace(good, []byte(`"total": 10`), []byte(`"total": 288230376151711745`), 1))
	f.Add(bytes.Replace(good, []byte(`"job": "job"`), []byte(`"job": "../x"`), 1))
	f.Add(bytes.Replace(good, []byte(`"rank": 2`), []byte(`"rank": 1`), 1))
	f.Add([]byte(`{"version":1,"job":"j","step":1,"world":1,"total":1,"shards":[{"rank":0,"lo":0,"hi":1,"file":"rank-00000-of-00001.safetensors","bytes":22,"header_sha256":"` +
		string(bytes.Repeat([]byte("a"), 64)) + `","data_sha256":"` + string(bytes.Repeat([]byte("b"), 64)) + `"}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"config":[[[[[[[[[[]]]]]]]]]]}`))
	f.Add([]byte(``))
	dir := f.TempDir()

	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := UnmarshalManifest(data)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20+64*uint64(len(data)) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(data), got)
		}

		// The file reader agrees (one file per fuzz process, rewritten).
		path := filepath.Join(dir, "MANIFEST-"+itoa(os.Getpid())+".json")
		if werr := os.WriteFile(path, data, 0o600); werr != nil {
			t.Fatal(werr)
		}
		fm, ferr := ReadManifestFile(path)
		if (ferr == nil) != (err == nil) {
			t.Fatalf("ReadManifestFile: %v; UnmarshalManifest: %v", ferr, err)
		}
		if ferr != nil {
			var c *CorruptError
			if !errors.As(ferr, &c) {
				t.Fatalf("a bad manifest file is not a CorruptError: %v", ferr)
			}
		}
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatalf("accepted manifest does not marshal: %v", err)
		}
		m2, err := UnmarshalManifest(b)
		if err != nil {
			t.Fatalf("re-encoded manifest is refused: %v\n%s", err, b)
		}
		b2, _ := m2.Marshal()
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the manifest:\n%s\n%s", b, b2)
		}
		if fb, _ := fm.Marshal(); !bytes.Equal(fb, b) {
			t.Fatal("the file reader and the decoder read different manifests")
		}
		for r := range m.Shards {
			if err := m.ShardMeta(r).Validate(); err != nil {
				t.Fatalf("shard %d of an accepted manifest has invalid metadata: %v", r, err)
			}
		}
		if c := m.Clone(); !bytes.Equal(mustMarshal(t, c), b) {
			t.Fatal("Clone differs")
		}
	})
}

func mustMarshal(t *testing.T, m *Manifest) []byte {
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// TestManifestTooLarge checks that an oversized manifest fails before it
// is decoded, in memory and on disk.
func TestManifestTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte(" "), maxManifestBytes+1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := UnmarshalManifest(big); err == nil {
		t.Fatal("accepted a manifest over the limit")
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("refusing an oversized manifest allocated %d bytes", got)
	}
	path := filepath.Join(t.TempDir(), ManifestFile)
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&before)
	_, err := ReadManifestFile(path)
	runtime.ReadMemStats(&after)
	var c *CorruptError
	if !errors.As(err, &c) {
		t.Fatalf("oversized manifest file: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("refusing an oversized manifest file allocated %d bytes", got)
	}
}
