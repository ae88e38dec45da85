package coordinator

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/pki"
)

// forge signs payload for key with creds' key and certificate, whatever
// their role: what an attacker holding a worker key could write.
func forge(t *testing.T, key string, a Assignment, creds *pki.Credentials, mutate func(*signedAssignment)) []byte {
	t.Helper()
	payload, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := creds.Cert.PrivateKey.(crypto.Signer).Sign(rand.Reader, assignmentDigest(key, payload), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	env := signedAssignment{Format: SignedAssignmentFormat, Payload: payload, Cert: creds.Cert.Leaf.Raw, Sig: sig}
	if mutate != nil {
		mutate(&env)
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testAssignment(job string, gen uint64) Assignment {
	return Assignment{Job: job, Generation: gen, Status: StatusRunning, Members: []string{"w0"}, TotalSteps: 10}
}

// TestAdversarialForgedAssignmentRefused: a worker given the cluster CA
// decodes only assignments a coordinator of that CA signed for that key.
func TestAdversarialForgedAssignmentRefused(t *testing.T) {
	l, other := testPKI(t), testPKI(t)
	coord, worker := testCreds(t, l, pki.RoleCoordinator), testCreds(t, l, pki.RoleWorker)
	trust := worker.CAs
	key := AssignmentKey("c1", "job-1")
	a := testAssignment("job-1", 7)

	good, err := EncodeAssignment(key, a, coord)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAssignment(key, good, trust, time.Time{})
	if err != nil || got.Generation != 7 || got.Rank("w0") != 0 {
		t.Fatalf("a coordinator's assignment: %+v, %v", got, err)
	}
	plain, _ := json.Marshal(a)
	otherKey := forge(t, key, a, coord, func(e *signedAssignment) { e.Sig = nil })
	for _, tc := range []struct {
		name  string
		key   string
		value []byte
		want  string
	}{
		{"unsigned", key, plain, "format"},
		{"signed by a worker", key, forge(t, key, a, worker, nil), "only coordinators"},
		{"signed by a user", key, forge(t, key, a, testCreds(t, l, pki.RoleUser), nil), "only coordinators"},
		{"signed by a coordinator of another CA", key, forge(t, key, a, testCreds(t, other, pki.RoleCoordinator), nil), "unknown authority"},
		{"payload changed after signing", key, forge(t, key, a, coord, func(e *signedAssignment) {
			e.Payload = []byte(strings.Replace(string(e.Payload), `"generation":7`, `"generation":8`, 1))
		}), "does not match"},
		{"coordinator certificate, worker's signature", key, forge(t, key, a, worker, func(e *signedAssignment) { e.Cert = coord.Cert.Leaf.Raw }), "does not match"},
		{"no signature", key, otherKey, "does not match"},
		{"replayed under another job's key", AssignmentKey("c1", "job-2"), good, "does not match"},
		{"replayed under another cluster's key", AssignmentKey("c2", "job-1"), good, "does not match"},
		{"oversized", key, append(good, make([]byte, MaxAssignmentBytes)...), "over the limit"},
		{"garbage certificate", key, forge(t, key, a, coord, func(e *signedAssignment) { e.Cert = []byte("x") }), "signer certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeAssignment(tc.key, tc.value, trust, time.Time{})
			if err == nil {
				t.Fatalf("accepted %+v", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// A coordinator whose certificate expired no longer assigns work.
	if _, err := DecodeAssignment(key, good, trust, time.Now().Add(2*pki.DefaultLeafValidity)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired signer: %v", err)
	}
	// Without a CA (a cluster without certificates) both forms decode,
	// and the job must still match the key.
	for _, v := range [][]byte{plain, good} {
		if _, err := DecodeAssignment(key, v, nil, time.Time{}); err != nil {
			t.Fatalf("no trust: %v", err)
		}
		if _, err := DecodeAssignment(AssignmentKey("c1", "job-2"), v, nil, time.Time{}); err == nil {
			t.Fatal("no trust: an assignment under another job's key was accepted")
		}
	}
}

// TestAdversarialForgedAssignmentNotWatched: assignments written to etcd
// by someone with full etcd access (root credentials; here plain etcd)
// never reach a worker that verifies, and do not stop the coordinator
// from writing the real one.
func TestAdversarialForgedAssignmentNotWatched(t *testing.T) {
	cli := startEtcd(t)
	l := testPKI(t)
	coord, worker := testCreds(t, l, pki.RoleCoordinator), testCreds(t, l, pki.RoleWorker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(job string, v []byte) {
		t.Helper()
		if _, err := cli.Put(ctx, AssignmentKey("c1", job), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	plain, _ := json.Marshal(testAssignment("forged-plain", 1))
	put("forged-plain", plain)
	put("forged-by-worker", forge(t, AssignmentKey("c1", "forged-by-worker"), testAssignment("forged-by-worker", 1), worker, nil))
	// A forged assignment with a huge generation on the real job's key
	// would keep a coordinator that believed it from ever publishing.
	huge, _ := json.Marshal(testAssignment("real", 1000))
	put("real", huge)
	if wrote, err := publishAssignment(ctx, cli, "c1", testAssignment("real", 1), coord); err != nil || !wrote {
		t.Fatalf("the coordinator did not replace the forged assignment: wrote %v, %v", wrote, err)
	}

	ch := WatchAssignmentsWith(ctx, cli, "c1", WatchOptions{Trust: worker.CAs, Log: testLogger()})
	next := func() Assignment {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-ctx.Done():
			t.Fatal("no assignment")
			return Assignment{}
		}
	}
	if a := next(); a.Job != "real" || a.Generation != 1 {
		t.Fatalf("first assignment seen: %+v", a)
	}
	// Forged updates while watching are dropped as well; the next real
	// one gets through.
	put("real", forge(t, AssignmentKey("c1", "real"), testAssignment("real", 2), worker, nil))
	put("forged-plain", plain)
	if wrote, err := publishAssignment(ctx, cli, "c1", testAssignment("real", 3), coord); err != nil || !wrote {
		t.Fatalf("publish generation 3: %v %v", wrote, err)
	}
	if a := next(); a.Job != "real" || a.Generation != 3 {
		t.Fatalf("after the forgeries: %+v", a)
	}
}
