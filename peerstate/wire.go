package peerstate

import (
	"encoding/binary"
	"math"
	"strconv"
)

// Subjects. All live under modcoord.<job>., which the workers' bus
// permissions already allow, and carry the generation, so that a later
// generation never hears an earlier one's messages.

// ReplicaSubject is where rank receives its left neighbour's gradient chunks.
func ReplicaSubject(job string, generation uint64, rank int) string {
	return subject(job, generation, "replica", rank)
}

// ServeSubject is where the store of rank of generation answers fetches.
func ServeSubject(job string, generation uint64, rank int) string {
	return subject(job, generation, "state", rank)
}

// ReplySubject is where rank of the fetching generation hears answers.
func ReplySubject(job string, generation uint64, rank int) string {
	return subject(job, generation, "statereply", rank)
}

func subject(job string, generation uint64, kind string, rank int) string {
	return "modcoord." + job + ".g" + strconv.FormatUint(generation, 10) + "." + kind + "." + strconv.Itoa(rank)
}

// Message headers, little-endian. Every size in a received header is
// checked against the message's length and the range it names before a
// byte is copied.
const (
	magicChunk   = 0x50524d43 // "CMRP": a gradient chunk
	magicRequest = 0x51524d43 // "CMRQ": a fetch request
	magicReply   = 0x53524d43 // "CMRS": a fetch reply

	// chunk: magic u32, step u64, offset u32, count u32, then count floats.
	chunkHeader = 4 + 8 + 4 + 4
	// request: magic u32, id u64, step u64, range u32, part u8, lo u64,
	// hi u64, reply subject length u16, then the subject.
	requestHeader = 4 + 8 + 8 + 4 + 1 + 8 + 8 + 2
	// reply: magic u32, id u64, status u8, count u32, then count floats
	// (status ok) or count bytes of error text.
	replyHeader = 4 + 8 + 1 + 4

	statusOK    = 0
	statusError = 1

	// maxSubject bounds a reply subject in a request.
	maxSubject = 256
	// maxChunkFloats bounds one message's floats whatever the bus allows:
	// 1 MiB messages keep the replication of a step pipelined.
	maxChunkFloats = 1 << 18
)

// chunkFloats is how many floats fit one message of the bus beside a header.
func chunkFloats(maxMessage, header int) int {
	return max(1, min(maxChunkFloats, (maxMessage-header)/4))
}

func putFloats(dst []byte, src []float32) {
	for i, f := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
	}
}

func getFloats(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

type request struct {
	id, step uint64
	rank     uint32
	part     Part
	lo, hi   uint64
	reply    string
}

func (r request) encode() []byte {
	b := make([]byte, requestHeader+len(r.reply))
	le := binary.LittleEndian
	le.PutUint32(b[0:], magicRequest)
	le.PutUint64(b[4:], r.id)
	le.PutUint64(b[12:], r.step)
	le.PutUint32(b[20:], r.rank)
	b[24] = byte(r.part)
	le.PutUint64(b[25:], r.lo)
	le.PutUint64(b[33:], r.hi)
	le.PutUint16(b[41:], uint16(len(r.reply)))
	copy(b[requestHeader:], r.reply)
	return b
}

func decodeRequest(b []byte) (request, bool) {
	le := binary.LittleEndian
	if len(b) < requestHeader || le.Uint32(b) != magicRequest {
		return request{}, false
	}
	n := int(le.Uint16(b[41:]))
	if n == 0 || n > maxSubject || len(b) != requestHeader+n {
		return request{}, false
	}
	return request{id: le.Uint64(b[4:]), step: le.Uint64(b[12:]), rank: le.Uint32(b[20:]), part: Part(b[24]),
		lo: le.Uint64(b[25:]), hi: le.Uint64(b[33:]), reply: string(b[requestHeader:])}, true
}
