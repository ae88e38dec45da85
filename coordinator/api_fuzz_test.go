package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// apiBody is one JSON body of the API, as its handler decodes it and
// turns it into a raft command.
type apiBody struct {
	path     string
	optional bool
	command  func(body []byte, w http.ResponseWriter, r *http.Request) (Command, bool)
}

func decodeInto[T any](optional bool, set func(*Command, *T)) func([]byte, http.ResponseWriter, *http.Request) (Command, bool) {
	return func(_ []byte, w http.ResponseWriter, r *http.Request) (Command, bool) {
		var v T
		if !decodeBody(w, r, &v, optional) {
			return Command{}, false
		}
		var c Command
		set(&c, &v)
		return c, true
	}
}

// apiBodies are the POST bodies of /v1/jobs/{id}/…, decoded exactly as
// the handlers in api.go decode them (decodeBody behind the
// authenticate middleware's MaxBytesReader) and wrapped in the command
// the handler proposes.
var apiBodies = []apiBody{
	{"progress", false, decodeInto(false, func(c *Command, v *ProgressReport) { c.Type, c.Progress = CmdProgress, v })},
	{"checkpoints", false, decodeInto(false, func(c *Command, v *ShardReport) { c.Type, c.Shard = CmdReportShard, v })},
	{"complete", false, decodeInto(false, func(c *Command, v *CompleteReport) { c.Type, c.Complete = CmdComplete, v })},
	{"fail", false, decodeInto(false, func(c *Command, v *FailReport) { c.Type, c.Fail = CmdFail, v })},
	{"cancel", true, decodeInto(true, func(c *Command, v *CancelRequest) { c.Type, c.Cancel = CmdCancel, v })},
	{"memory", false, decodeInto(false, func(c *Command, v *MemoryReport) { c.Type, c.Memory = CmdMemoryReport, v })},
}

// serveBody decodes body as the handler for kind does, and returns the
// command it would propose (ok) or the error response it wrote.
func serveBody(t testing.TB, b apiBody, body []byte) (Command, bool, *httptest.ResponseRecorder) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/jobs/job-000001/"+b.path, bytes.NewReader(body))
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes) // as authenticate does
	c, ok := b.command(body, w, r)
	c.Job, c.At = "job-000001", t0
	return c, ok, w
}

// FuzzAPIBodies feeds arbitrary bodies to the decoding of every JSON body
// a worker or client posts about a job, and applies what decodes to a
// state machine in each fuzz state, as the leader would. A body that does
// not decode gets a 400 with a JSON error and proposes nothing; one that
// does never panics the FSM and keeps its invariants; decoding allocates
// at most a fixed multiple of the body.
func FuzzAPIBodies(f *testing.F) {
	states := buildFuzzStates(f)
	seeds := []string{
		`{"generation":1,"step":10,"loss":4.2,"val_loss":4.5,"tokens":4096,"wall_s":0.5,"worker":"a"}`,
		`{"generation":1,"step":10,"shard":{"rank":0,"lo":0,"hi":50,"file":"rank-00000-of-00002.safetensors","bytes":708,"header_sha256":"` + strings.Repeat("cd", 32) + `","data_sha256":"` + strings.Repeat("ab", 32) + `"},"config":{"test":true}}`,
		`{"generation":1,"step":100}`,
		`{"generation":1,"reason":"data file missing"}`,
		`{"reason":"enough"}`,
		``,
		` `,
		`{}`,
		`null`,
		`{"generation":-1}`,
		`{"unknown":1}`,
		`{"config":{"a":[[[[[[[[]]]]]]]]}}`,
		`{"step":1e400}`,
		`{"worker":"\ud800"}`,
		`{} {}`,
		`[`,
	}
	for i := range apiBodies {
		for _, s := range seeds {
			f.Add(uint8(i), uint8(3), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind, which uint8, body []byte) {
		b := apiBodies[int(kind)%len(apiBodies)]
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c, ok, w := serveBody(t, b, body)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20+64*uint64(len(body)) {
			t.Fatalf("decoding a %d-byte %s body allocated %d bytes", len(body), b.path, got)
		}
		if !ok {
			var e ErrorResponse
			if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a refused body answered %d", w.Code)
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Error == "" {
				t.Fatalf("a refused body's answer is not an ErrorResponse: %q", w.Body.String())
			}
			return
		}
		if w.Body.Len() != 0 {
			t.Fatalf("an accepted body wrote a response: %q", w.Body.String())
		}
		if err := c.checkPayload(); err != nil {
			t.Fatalf("the handler's command is malformed: %v", err)
		}
		entry, err := encodeCommand(c)
		if err != nil {
			t.Fatalf("a decoded body does not encode: %v", err)
		}
		fsm := restoredFSM(t, states[int(which)%len(states)])
		res := fsm.Apply(&raft.Log{Index: 1, Data: entry})
		if err, isErr := res.(error); isErr {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrStale) {
				t.Fatalf("Apply's error maps to a 500: %v", err)
			}
		}
		checkFSMInvariants(t, fsm)
	})
}

// TestAPIBodyTooLarge checks that a body over the limit is refused with
// 413 after reading at most the limit, for every body.
func TestAPIBodyTooLarge(t *testing.T) {
	big := append([]byte(`{"reason":"`), bytes.Repeat([]byte("x"), maxRequestBytes)...)
	big = append(big, `"}`...)
	for _, b := range apiBodies {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, ok, w := serveBody(t, b, big)
		runtime.ReadMemStats(&after)
		if ok || w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: a %d-byte body answered %d", b.path, len(big), w.Code)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8*maxRequestBytes {
			t.Errorf("%s: refusing a %d-byte body allocated %d bytes", b.path, len(big), got)
		}
	}
}
