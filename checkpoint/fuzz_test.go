package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzOpenShard feeds arbitrary bytes to the shard reader. Whatever the
// input, it must not panic or allocate beyond the input's size, and
// anything it accepts must be internally consistent. Run it with
//
//	go test -run '^$' -fuzz FuzzOpenShard -fuzztime 60s ./checkpoint/
func FuzzOpenShard(f *testing.F) {
	_, good := validShard(f)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:12])
	f.Add([]byte{})
	n := binary.LittleEndian.Uint64(good[:8])
	f.Add(good[:8+n])
	flipped := bytes.Clone(good)
	flipped[8+n/2] ^= 0x20
	f.Add(flipped)

	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := newShardFile(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejection is not an ErrCorrupt: %v", err)
			}
			return
		}
		m := sf.Meta()
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted invalid metadata: %v", err)
		}
		if sf.Size() != int64(len(data)) || sf.layout.dataStart+12*int64(m.Len()) != sf.Size() {
			t.Fatalf("accepted a file whose size does not match its tensors")
		}
		err = sf.VerifyData(context.Background())
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("VerifyData: %v", err)
		}
		for _, name := range tensorNames() {
			dst := make([]float32, m.Len())
			if err := sf.ReadRange(name, m.Lo, m.Hi, dst); err != nil {
				t.Fatalf("ReadRange %s of an accepted file: %v", name, err)
			}
		}
	})
}
