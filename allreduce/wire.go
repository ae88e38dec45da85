package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"unsafe"
)

// The wire format of the ring's messages: the phases, the fixed header
// every message starts with, and the encoding of float32 and float64
// payloads (int8 payloads are in int8.go).

// phase says what a message is. Data phases belong to one kind of
// collective; heartbeats and aborts to whichever collective seq names.
type phase uint8

const (
	phaseReduceScatter phase = 1 + iota
	phaseAllGather
	phaseScalarReduce
	phaseScalarBroadcast
	phaseHeartbeat
	phaseAbort
	// phaseGather is the fan-out all-gather: an owner's chunk published
	// once to the generation's broadcast subject (GatherSubject).
	phaseGather
	// phaseReduceScatterInt8 is a reduce-scatter whose chunks are int8
	// with a float32 scale (int8.go).
	phaseReduceScatterInt8
	phaseEnd // first invalid value
)

func (p phase) String() string {
	switch p {
	case phaseReduceScatter:
		return "reduce-scatter"
	case phaseAllGather:
		return "ring all-gather"
	case phaseScalarReduce:
		return "scalar-reduce"
	case phaseScalarBroadcast:
		return "scalar-broadcast"
	case phaseHeartbeat:
		return "heartbeat"
	case phaseAbort:
		return "abort"
	case phaseGather:
		return "fan-out all-gather"
	case phaseReduceScatterInt8:
		return "int8 reduce-scatter"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// elemSize is the size of one payload element of a phase: float32 for the
// vector collectives, float64 for scalars, bytes (a reason) for aborts.
func (p phase) elemSize() int {
	switch p {
	case phaseReduceScatter, phaseAllGather, phaseGather:
		return 4
	case phaseScalarReduce, phaseScalarBroadcast:
		return 8
	case phaseAbort, phaseReduceScatterInt8:
		return 1
	}
	return 0
}

// payloadBytes is the payload of count elements: an int8 chunk has its
// scale in front.
func (p phase) payloadBytes(count uint32) uint64 {
	n := uint64(count) * uint64(p.elemSize())
	if p == phaseReduceScatterInt8 {
		n += int8ScaleBytes
	}
	return n
}

// Heartbeat flags, carried in header.chunk.
const (
	// flagDone says the sender has finished collective seq, so silence
	// from it afterwards is not a failure.
	flagDone = 1 << iota
	// flagHello says the sender has not yet heard from every peer and
	// wants a heartbeat back, so that it knows they are subscribed.
	flagHello
)

// noSuspect in an abort's chunk field means the aborting rank blames nobody
// else (its caller cancelled, for example).
const noSuspect = ^uint32(0)

const (
	headerMagic   = 0x4d43 // "MC"
	headerVersion = 1
	// headerSize is a multiple of 8 so that payloads of float32 and
	// float64 stay aligned in a freshly allocated message.
	headerSize = 48
	// maxAbortReason bounds the text an abort carries.
	maxAbortReason = 256
)

// header is the fixed binary prefix of every message, little-endian:
//
//	off size field
//	  0    2 magic 0x4d43
//	  2    1 version
//	  3    1 phase
//	  4    2 from: sender's rank
//	  6    2 hop: ring step within the collective
//	  8    8 job: FNV-1a 64 of the job id
//	 16    8 generation
//	 24    8 seq: collective number on this Ring, from 1
//	 32    8 step: training step the caller passed
//	 40    4 chunk: chunk index (heartbeat flags, abort suspect)
//	 44    4 count: payload elements
//	 48      payload: count elements of phase.elemSize() bytes
type header struct {
	phase phase
	from  uint16
	hop   uint16
	job   uint64
	gen   uint64
	seq   uint64
	step  uint64
	chunk uint32
	count uint32
}

func (h *header) put(b []byte) {
	_ = b[headerSize-1]
	binary.LittleEndian.PutUint16(b[0:], headerMagic)
	b[2] = headerVersion
	b[3] = byte(h.phase)
	binary.LittleEndian.PutUint16(b[4:], h.from)
	binary.LittleEndian.PutUint16(b[6:], h.hop)
	binary.LittleEndian.PutUint64(b[8:], h.job)
	binary.LittleEndian.PutUint64(b[16:], h.gen)
	binary.LittleEndian.PutUint64(b[24:], h.seq)
	binary.LittleEndian.PutUint64(b[32:], h.step)
	binary.LittleEndian.PutUint32(b[40:], h.chunk)
	binary.LittleEndian.PutUint32(b[44:], h.count)
}

var errMalformed = errors.New("malformed message")

// senderOf reads only the from field of msg, for filtering before the
// whole header is checked; ok is false when msg is too short to have one.
func senderOf(msg []byte) (rank int, ok bool) {
	if len(msg) < headerSize {
		return 0, false
	}
	return int(binary.LittleEndian.Uint16(msg[4:])), true
}

// parseHeader decodes and checks the parts of a header that need no
// context: size, magic, version, phase, and that count elements of the
// phase's size are exactly what follows. It never indexes past msg.
func parseHeader(msg []byte) (header, error) {
	if len(msg) < headerSize {
		return header{}, fmt.Errorf("%w: %d bytes, header alone is %d", errMalformed, len(msg), headerSize)
	}
	if m := binary.LittleEndian.Uint16(msg[0:]); m != headerMagic {
		return header{}, fmt.Errorf("%w: magic %#x", errMalformed, m)
	}
	if msg[2] != headerVersion {
		return header{}, fmt.Errorf("%w: version %d, want %d", errMalformed, msg[2], headerVersion)
	}
	h := header{
		phase: phase(msg[3]),
		from:  binary.LittleEndian.Uint16(msg[4:]), // senderOf reads the same
		hop:   binary.LittleEndian.Uint16(msg[6:]),
		job:   binary.LittleEndian.Uint64(msg[8:]),
		gen:   binary.LittleEndian.Uint64(msg[16:]),
		seq:   binary.LittleEndian.Uint64(msg[24:]),
		step:  binary.LittleEndian.Uint64(msg[32:]),
		chunk: binary.LittleEndian.Uint32(msg[40:]),
		count: binary.LittleEndian.Uint32(msg[44:]),
	}
	if h.phase == 0 || h.phase >= phaseEnd {
		return header{}, fmt.Errorf("%w: unknown phase %d", errMalformed, h.phase)
	}
	// uint64 arithmetic: count up to 2^32-1 times 8 cannot overflow.
	if want := uint64(headerSize) + h.phase.payloadBytes(h.count); want != uint64(len(msg)) {
		return header{}, fmt.Errorf("%w: %s header says %d elements (%d bytes), message has %d bytes",
			errMalformed, h.phase, h.count, want, len(msg))
	}
	return h, nil
}

// jobHash is what the header carries for the job id. Subjects already
// scope messages per job; the hash catches a message that crossed jobs
// anyway (a misconfigured subject or permission).
func jobHash(job string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(job))
	return f.Sum64()
}

// The wire format is little-endian. On little-endian machines (all the
// ones this runs on) a payload is reinterpreted in place instead of being
// decoded element by element; the loops below are the portable fallback
// for big-endian machines and misaligned buffers.

// littleEndian is fixed at start-up and never written again.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// f32View is b as float32s when that is the wire interpretation.
func f32View(b []byte) ([]float32, bool) {
	if !littleEndian || len(b)%4 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return nil, true
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}

// nativeBytes is the memory of f as bytes, for copying and socket I/O
// between two buffers of the same machine.
func nativeBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// putF32 encodes src into dst (len(dst) == 4*len(src)).
func putF32(dst []byte, src []float32) {
	if littleEndian {
		copy(dst, nativeBytes(src))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// getF32 decodes payload into dst (len(payload) == 4*len(dst)).
func getF32(dst []float32, payload []byte) {
	if littleEndian {
		copy(nativeBytes(dst), payload)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(payload[4*i:]))
	}
}

// addF32 sets dst[i] = recv[i] + dst[i], recv being the encoded payload.
// The received partial sum is always the left operand; see sumOrder.
func addF32(dst []float32, payload []byte) {
	if p, ok := f32View(payload); ok {
		SumF32(dst, p, dst)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(payload[4*i:])) + dst[i]
	}
}

// addF32InPayload sets recv[i] = recv[i] + own[i] inside the encoded
// payload, so a partial sum is forwarded without another buffer.
func addF32InPayload(payload []byte, own []float32) {
	if p, ok := f32View(payload); ok {
		SumF32(p[:len(own)], p, own)
		return
	}
	for i, o := range own {
		b := payload[4*i:]
		binary.LittleEndian.PutUint32(b, math.Float32bits(math.Float32frombits(binary.LittleEndian.Uint32(b))+o))
	}
}

func putF64(dst []byte, src []float64) {
	for i, v := range src {
		binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(v))
	}
}

func getF64(dst []float64, payload []byte) {
	for i := range dst {
		dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(payload[8*i:]))
	}
}
