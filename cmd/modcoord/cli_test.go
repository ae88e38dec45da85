package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/pki"
)

// testPKI is one throwaway CA and role certificates for every test of the
// package; run hands the client commands its directory as
// MODCOORD_TLS_DIR.
var testPKI = sync.OnceValue(func() *pki.Local {
	dir, err := os.MkdirTemp("", "modcoord-cli-pki-")
	if err != nil {
		panic(err)
	}
	l, err := pki.EnsureDir(filepath.Join(dir, "pki"), pki.EnsureOptions{})
	if err != nil {
		panic(err)
	}
	return l
})

func TestMain(m *testing.M) {
	code := m.Run()
	if l := testPKI(); l != nil {
		os.RemoveAll(filepath.Dir(l.Dir))
	}
	os.Exit(code)
}

// fakeCoordinator answers the API calls the client commands make, with
// one job per id in jobs.
func fakeCoordinator(t *testing.T, jobs map[string]coordinator.Job) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, _ *http.Request) {
		var l coordinator.JobList
		for _, j := range jobs {
			l.Jobs = append(l.Jobs, j)
		}
		json.NewEncoder(w).Encode(l)
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, ok := jobs[r.PathValue("id")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(coordinator.ErrorResponse{Error: "no such job", Code: "not_found"})
			return
		}
		json.NewEncoder(w).Encode(j)
	})
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		j := jobs[r.PathValue("id")]
		j.Status, j.Reason = coordinator.StatusCanceled, "canceled: by test"
		json.NewEncoder(w).Encode(j)
	})
	creds, err := testPKI().Credentials(pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := pki.ServerConfig(creds, pki.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = conf
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// closedAddr is a 127.0.0.1 port nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// run executes a command line in-process with the given environment.
func run(ctx context.Context, environ map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = execute(ctx, args, &out, &errb, env{getenv: func(k string) string {
		if v, ok := environ[k]; ok || k != "MODCOORD_TLS_DIR" {
			return v
		}
		return testPKI().Dir
	}})
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	done := coordinator.Job{ID: "job-000001", Status: coordinator.StatusCompleted, Reason: "completed: 10 steps",
		Ledger: coordinator.Ledger{TotalSteps: 10, StepsDone: 10}}
	failed := coordinator.Job{ID: "job-000002", Status: coordinator.StatusFailed, Reason: "failed: NaN loss",
		Ledger: coordinator.Ledger{TotalSteps: 10, StepsDone: 3}}
	api := fakeCoordinator(t, map[string]coordinator.Job{done.ID: done, failed.ID: failed})
	dead := closedAddr(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name        string
		ctx         context.Context
		env         map[string]string
		args        []string
		code        int
		stdout      string // a fragment stdout must hold
		stderr      string // a fragment stderr must hold
		emptyStdout bool
	}{
		{name: "help prints the exit codes on stdout", args: []string{"--help"}, code: exitOK, stdout: "Exit codes:"},
		{name: "no command is help", args: nil, code: exitOK, stdout: "Talking to a cluster:"},
		{name: "help CMD", args: []string{"help", "status"}, code: exitOK, stdout: "modcoord status [JOB]"},
		{name: "CMD --help", args: []string{"watch", "--help"}, code: exitOK, stdout: "--coordinator"},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: "blas"},
		{name: "version --json", args: []string{"version", "--json"}, code: exitOK, stdout: `"go":"go1.`},
		{name: "completion bash", args: []string{"completion", "bash"}, code: exitOK, stdout: "bash completion"},
		{name: "completion zsh", args: []string{"completion", "zsh"}, code: exitOK, stdout: "compdef"},
		{name: "completion fish", args: []string{"completion", "fish"}, code: exitOK, stdout: "complete -c modcoord"},
		{name: "unknown command", args: []string{"stauts"}, code: exitUsage, stderr: `unknown command "stauts"`, emptyStdout: true},
		{name: "unknown bench", args: []string{"bench", "gpu"}, code: exitUsage, stderr: `unknown command "gpu"`},
		{name: "unknown flag", args: []string{"status", "--bogus"}, code: exitUsage, stderr: "unknown flag: --bogus"},
		{name: "bad flag value", args: []string{"train", "--steps", "many"}, code: exitUsage, stderr: "--steps"},
		{name: "out-of-range flag value", args: []string{"train", "--steps", "0"}, code: exitUsage, stderr: "--steps 0"},
		{name: "missing argument", args: []string{"cancel"}, code: exitUsage, stderr: "accepts 1 arg"},
		{name: "extra argument", args: []string{"status", "a", "b"}, code: exitUsage, stderr: "accepts at most 1 arg"},
		{name: "bad environment value", env: map[string]string{"MODCOORD_CONNECT_TIMEOUT": "soon"}, args: []string{"status"}, code: exitUsage, stderr: "MODCOORD_CONNECT_TIMEOUT"},
		{name: "runtime failure", args: []string{"eval", "--checkpoint", t.TempDir()}, code: exitFailure, stderr: "open checkpoint"},
		{name: "isoflop unknown variant", args: []string{"isoflop", "--variants", "dense,moe-c0.1"}, code: exitUsage, stderr: `variant "moe-c0.1"`},
		{name: "isoflop --seeds 0", args: []string{"isoflop", "--seeds", "0"}, code: exitUsage, stderr: "--seeds 0"},
		{name: "API error", args: []string{"status", "--coordinator", api, "job-404"}, code: exitFailure, stderr: "no such job"},
		{name: "status --json", args: []string{"status", "--coordinator", api, "--json", done.ID}, code: exitOK, stdout: `"id":"job-000001"`},
		{name: "old --addr spelling", args: []string{"status", "--addr", api, done.ID}, code: exitOK, stdout: "completed: 10 steps"},
		{name: "coordinator from the environment", env: map[string]string{"MODCOORD_COORDINATOR": api}, args: []string{"status", done.ID}, code: exitOK, stdout: "completed: 10 steps"},
		{name: "old MODCOORD_ADDR", env: map[string]string{"MODCOORD_ADDR": api}, args: []string{"status", done.ID}, code: exitOK, stdout: "completed: 10 steps"},
		{name: "flag wins over environment", env: map[string]string{"MODCOORD_COORDINATOR": "https://" + dead}, args: []string{"status", "--coordinator", api, done.ID}, code: exitOK},
		{name: "cancel --json", args: []string{"cancel", "--coordinator", api, "--json", done.ID}, code: exitOK, stdout: `"status":"canceled"`},
		{name: "watch a completed job", args: []string{"watch", "--coordinator", api, done.ID}, code: exitOK, stderr: "step 10/10"},
		{name: "watch --json", args: []string{"watch", "--coordinator", api, "--json", done.ID}, code: exitOK, stdout: `"status":"completed"`},
		{name: "watch a failed job", args: []string{"watch", "--coordinator", api, failed.ID}, code: exitJobEnded, stderr: "failed: NaN loss"},
		{name: "dead coordinator", args: []string{"status", "--coordinator", "https://" + dead}, code: exitUnreachable, stderr: dead},
		{name: "no client certificate", env: map[string]string{"MODCOORD_TLS_DIR": ""}, args: []string{"status", "--coordinator", api}, code: exitUsage, stderr: "--tls-dir"},
		{name: "a plain-HTTP coordinator URL", args: []string{"status", "--coordinator", strings.Replace(api, "https://", "http://", 1)}, code: exitUsage, stderr: "use https://"},
		{name: "--tls-server-name a name the certificate holds", args: []string{"status", "--coordinator", api, "--tls-server-name", "localhost", done.ID}, code: exitOK, stdout: "completed: 10 steps"},
		{name: "--tls-server-name a name it does not hold", args: []string{"status", "--coordinator", api, "--tls-server-name", "elsewhere.example", done.ID}, code: exitFailure, stderr: "elsewhere.example"},
		{name: "--tls-server-name not a name", args: []string{"status", "--coordinator", api, "--tls-server-name", "https://x", done.ID}, code: exitUsage, stderr: "--tls-server-name"},
		{name: "interrupted", ctx: canceled, args: []string{"watch", "--coordinator", api, done.ID}, code: exitInterrupted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			code, stdout, stderr := run(ctx, tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("modcoord %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
			if tc.emptyStdout && stdout != "" {
				t.Errorf("stdout should be empty on a usage error, got:\n%s", stdout)
			}
		})
	}
}

// A dead coordinator address fails fast and names the address; before the
// connect check, the client's retries took about 11 s to give up.
func TestDeadCoordinatorFailsFast(t *testing.T) {
	dead := closedAddr(t)
	for _, args := range [][]string{
		{"status"}, {"watch", "job-1"}, {"cancel", "job-1"}, {"checkpoints", "job-1"},
	} {
		t.Run(args[0], func(t *testing.T) {
			start := time.Now()
			code, _, stderr := run(context.Background(), nil, append(args, "--coordinator", dead)...)
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("took %s against a closed port", took)
			}
			if code != exitUnreachable || !strings.Contains(stderr, dead) {
				t.Errorf("exit %d, stderr %q: want %d naming %s", code, stderr, exitUnreachable, dead)
			}
		})
	}
}

// The documented table and the constants agree, and --help carries it.
func TestExitCodeTableIsComplete(t *testing.T) {
	seen := map[int]bool{}
	for _, e := range exitCodeTable {
		seen[e.code] = true
	}
	for _, c := range []int{exitOK, exitFailure, exitUsage, exitJobEnded, exitUnreachable, exitInterrupted} {
		if !seen[c] {
			t.Errorf("exit code %d is not in exitCodeTable", c)
		}
	}
}
