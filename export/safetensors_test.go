package export_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/export"
)

type stEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// parseSafetensors is an independent reader of what WriteSafetensors
// wrote: metadata, entries and the float32 values of each tensor.
func parseSafetensors(t *testing.T, b []byte) (map[string]string, map[string]stEntry, map[string][]float32) {
	t.Helper()
	if len(b) < 8 {
		t.Fatalf("%d bytes", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) || (8+n)%8 != 0 {
		t.Fatalf("header length %d in a %d-byte file (data must start 8-byte aligned)", n, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	entries := map[string]stEntry{}
	for k, v := range raw {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &meta); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var e stEntry
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatal(err)
		}
		entries[k] = e
	}
	data := b[8+n:]
	values := map[string][]float32{}
	var end int64
	for k, e := range entries {
		if e.DataOffsets[1] > int64(len(data)) || e.DataOffsets[0] > e.DataOffsets[1] {
			t.Fatalf("%s: offsets %v outside %d data bytes", k, e.DataOffsets, len(data))
		}
		end = max(end, e.DataOffsets[1])
		for i := e.DataOffsets[0]; i < e.DataOffsets[1]; i += 4 {
			values[k] = append(values[k], math.Float32frombits(binary.LittleEndian.Uint32(data[i:])))
		}
	}
	if end != int64(len(data)) {
		t.Fatalf("tensors end at %d, data section is %d bytes", end, len(data))
	}
	return meta, entries, values
}

func TestWriteSafetensors(t *testing.T) {
	big := make([]float32, 3000) // more than one write chunk
	for i := range big {
		big[i] = float32(i) * 0.5
	}
	tensors := []export.Tensor{
		{Name: "a.weight", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, float32(math.Inf(1)), 0, -0.25}},
		{Name: "b", Shape: []int{1}, Data: []float32{42}},
		{Name: "c", Shape: []int{1000, 3}, Data: big},
	}
	var buf bytes.Buffer
	if err := export.WriteSafetensors(&buf, tensors, map[string]string{"format": "x"}); err != nil {
		t.Fatal(err)
	}
	meta, entries, values := parseSafetensors(t, buf.Bytes())
	if meta["format"] != "x" {
		t.Errorf("metadata %v", meta)
	}
	var off int64
	for _, tn := range tensors { // data in the order given, contiguous
		e := entries[tn.Name]
		if e.DType != "F32" || !slices.Equal(e.Shape, tn.Shape) || e.DataOffsets[0] != off {
			t.Errorf("%s: entry %+v, want F32 %v at %d", tn.Name, e, tn.Shape, off)
		}
		off = e.DataOffsets[1]
		if !slices.Equal(values[tn.Name], tn.Data) {
			t.Errorf("%s: values differ", tn.Name)
		}
	}
}

func TestWriteSafetensorsRefusesBadTensors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tensors []export.Tensor
		want    string
	}{
		{"shape and data disagree", []export.Tensor{{Name: "a", Shape: []int{2, 2}, Data: make([]float32, 3)}}, "holds 4 values"},
		{"duplicate", []export.Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}, "twice"},
		{"reserved name", []export.Tensor{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}}, "not allowed"},
		{"empty name", []export.Tensor{{Name: "", Shape: []int{1}, Data: []float32{1}}}, "not allowed"},
		{"negative dimension", []export.Tensor{{Name: "a", Shape: []int{-1, -1}, Data: []float32{1}}}, "negative"},
	} {
		var buf bytes.Buffer
		err := export.WriteSafetensors(&buf, tc.tensors, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before refusing", tc.name, buf.Len())
		}
	}
}
