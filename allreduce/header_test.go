package allreduce

import (
	"errors"
	"math"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []header{
		{phase: phaseReduceScatter, from: 3, hop: 2, job: jobHash("j"), gen: 9, seq: 12, step: 1 << 40, chunk: 5, count: 16},
		{phase: phaseScalarBroadcast, from: 65535, gen: 1<<64 - 1, count: 3},
		{phase: phaseHeartbeat, chunk: flagDone | flagHello},
		{phase: phaseAbort, chunk: noSuspect, count: 7},
		{phase: phaseReduceScatterInt8, from: 1, hop: 1, chunk: 2, count: 9},
	}
	for _, want := range tests {
		msg := make([]byte, headerSize+int(want.phase.payloadBytes(want.count)))
		want.put(msg)
		got, err := parseHeader(msg)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got != want {
			t.Errorf("parsed %+v, put %+v", got, want)
		}
	}
}

func TestParseHeaderRejects(t *testing.T) {
	valid := func() []byte {
		h := header{phase: phaseAllGather, count: 4}
		msg := make([]byte, headerSize+16)
		h.put(msg)
		return msg
	}
	tests := []struct {
		name string
		msg  func() []byte
	}{
		{"nil", func() []byte { return nil }},
		{"one byte short of a header", func() []byte { return valid()[:headerSize-1] }},
		{"payload cut", func() []byte { return valid()[:headerSize+15] }},
		{"payload too long", func() []byte { return append(valid(), 0) }},
		{"bad magic", func() []byte { m := valid(); m[1] = 0; return m }},
		{"bad version", func() []byte { m := valid(); m[2] = 2; return m }},
		{"phase 0", func() []byte { m := valid(); m[3] = 0; return m }},
		{"phase past the last", func() []byte { m := valid(); m[3] = byte(phaseEnd); return m }},
		{"int8 chunk without its scale", func() []byte {
			h := header{phase: phaseReduceScatterInt8, count: 4}
			msg := make([]byte, headerSize+4)
			h.put(msg)
			return msg
		}},
		{"count overflows", func() []byte { m := valid(); m[44], m[45], m[46], m[47] = 0xff, 0xff, 0xff, 0xff; return m }},
	}
	for _, tt := range tests {
		if _, err := parseHeader(tt.msg()); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want errMalformed", tt.name, err)
		}
	}
}

// FuzzParseHeader: no input may panic, and whatever parses must describe
// exactly the bytes it came with.
func FuzzParseHeader(f *testing.F) {
	h := header{phase: phaseReduceScatter, count: 2}
	seed := make([]byte, headerSize+8)
	h.put(seed)
	f.Add(seed)
	i8 := header{phase: phaseReduceScatterInt8, count: 3}
	seedInt8 := make([]byte, headerSize+int(i8.phase.payloadBytes(i8.count)))
	i8.put(seedInt8)
	f.Add(seedInt8)
	f.Add([]byte{})
	f.Add(make([]byte, headerSize))
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := parseHeader(msg)
		if err != nil {
			return
		}
		if uint64(headerSize)+h.phase.payloadBytes(h.count) != uint64(len(msg)) {
			t.Fatalf("accepted %+v for %d bytes", h, len(msg))
		}
	})
}

func TestInboxSubject(t *testing.T) {
	tests := []struct {
		job  string
		gen  uint64
		rank int
		want string
	}{
		{"run-1", 0, 0, "modcoord.run-1.g0.ring.0"},
		{"a_b", 18446744073709551615, 65534, "modcoord.a_b.g18446744073709551615.ring.65534"},
	}
	for _, tt := range tests {
		if got := InboxSubject(tt.job, tt.gen, tt.rank); got != tt.want {
			t.Errorf("InboxSubject(%q, %d, %d) = %q, want %q", tt.job, tt.gen, tt.rank, got, tt.want)
		}
	}
}

// TestFloatCodecPortable checks the in-place fast paths against the
// element-by-element little-endian encoding, including a misaligned
// buffer, which must take the slow path and give the same bits.
func TestFloatCodecPortable(t *testing.T) {
	src := []float32{1.5, -2.25, 3e-38, 7e30, 0}
	for _, offset := range []int{0, 1} {
		raw := make([]byte, 4*len(src)+offset)
		b := raw[offset:]
		putF32(b, src)
		got := make([]float32, len(src))
		getF32(got, b)
		for i := range src {
			if got[i] != src[i] {
				t.Fatalf("offset %d: element %d round-trips to %v, want %v", offset, i, got[i], src[i])
			}
			if b[4*i] != byte(math.Float32bits(src[i])) {
				t.Fatalf("offset %d: element %d not little-endian", offset, i)
			}
		}
		own := []float32{1, 1, 1, 1, 1}
		addF32InPayload(b, own)
		sum := make([]float32, len(src))
		addF32(sum, b)
		for i := range src {
			if want := src[i] + 1; sum[i] != want {
				t.Fatalf("offset %d: element %d sums to %v, want %v", offset, i, sum[i], want)
			}
		}
	}
}
