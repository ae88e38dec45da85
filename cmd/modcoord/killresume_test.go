package main

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/modcoord/modcoord/train"
)

// buildBinary compiles modcoord once for the process-level tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "modcoord")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build modcoord: %v", err)
	}
	return bin
}

const killTestConfig = `model: {d_model: 32, layers: 2, heads: 2, seq_len: 32, capacity: 0.25, seed: 3}
batch: 8
seed: 4
`

// finalStateHash is the data checksum of the final checkpoint's single
// shard: it covers parameters and both AdamW moments, bit for bit.
func finalStateHash(t *testing.T, out string) (int64, string) {
	t.Helper()
	o, err := train.OpenCheckpoint(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	return o.Manifest.Step, o.Manifest.Shards[0].DataSHA256
}

// TestSIGKILLThenResumeIsBitIdentical kills `modcoord train` with SIGKILL
// at random steps (a real process, mid-step or mid-checkpoint), resumes it
// with --resume, and requires the final parameters and optimizer state to
// be bit-identical to an uninterrupted run: equal sha256. It does so with
// the text file and with token shards prepared from it (byte tokenizer,
// several shards, windows crossing shard boundaries); those are the same
// tokens split the same way, so both uninterrupted runs end in the same
// state too.
func TestSIGKILLThenResumeIsBitIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; run without -short")
	}
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "tiny.yaml")
	if err := os.WriteFile(cfgPath, []byte(killTestConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := filepath.Abs("../../data/tinyshakespeare.txt")
	if err != nil {
		t.Fatal(err)
	}
	shards := filepath.Join(t.TempDir(), "shards")
	if outB, err := exec.Command(bin, "prepare", "--tokenizer", "byte", "--shard-tokens", "300000", "--out", shards, text).CombinedOutput(); err != nil {
		t.Fatalf("prepare: %v\n%s", err, outB)
	}
	var textHash string
	for _, tc := range []struct{ name, data string }{{"text", text}, {"shards", shards}} {
		t.Run(tc.name, func(t *testing.T) {
			refHash := killAndResume(t, bin, cfgPath, tc.data)
			if textHash == "" {
				textHash = refHash
			} else if refHash != textHash {
				t.Fatalf("training on the prepared byte shards ended in state %s, on the text in %s; they hold the same tokens", refHash, textHash)
			}
		})
	}
}

// killAndResume is TestSIGKILLThenResumeIsBitIdentical on one corpus; it
// returns the uninterrupted run's final state hash.
func killAndResume(t *testing.T, bin, cfgPath, data string) string {
	const steps = 60
	args := func(out string) []string {
		return []string{"train", "--data", data, "--config", cfgPath, "--steps", strconv.Itoa(steps), "--out", out,
			"--checkpoint-every", "5", "--eval-every", "0", "--eval-windows", "1", "--log-every", "1"}
	}
	ref := filepath.Join(t.TempDir(), "ref")
	if outB, err := exec.Command(bin, args(ref)...).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, outB)
	}
	refStep, refHash := finalStateHash(t, ref)
	if refStep != steps {
		t.Fatalf("uninterrupted run ended at step %d", refStep)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	stepLine := regexp.MustCompile(`^step\s+(\d+)/`)
	// On a fast machine a late kill can land after the final checkpoint;
	// such an attempt proves nothing, so it is drawn again, up to a limit.
	const trials, maxAttempts = 5, 20
	for trial, attempt := 0, 0; trial < trials; attempt++ {
		if attempt == maxAttempts {
			t.Fatalf("only %d of %d kills landed before the run finished in %d attempts", trial, trials, maxAttempts)
		}
		killAt := 6 + rng.IntN(steps-12) // past the first checkpoint, before the end
		out := filepath.Join(t.TempDir(), "run")
		cmd := exec.Command(bin, args(out)...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			m := stepLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			if s, _ := strconv.Atoi(m[1]); s >= killAt {
				// A random delay lands the kill anywhere in the next step or
				// in the checkpoint write that may follow it.
				time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		go func() {
			for sc.Scan() { // drain
			}
		}()
		cmd.Wait()
		o, err := train.OpenCheckpoint(context.Background(), out)
		if err != nil {
			t.Fatalf("trial %d: after SIGKILL at step %d: %v", trial, killAt, err)
		}
		if o.Manifest.Step == steps {
			t.Logf("attempt %d: the kill after step %d landed once the final checkpoint was committed; drawing again", attempt, killAt)
			continue
		}
		resumedFrom := o.Manifest.Step
		resumeArgs := []string{"train", "--data", data, "--resume", out, "--out", out,
			"--checkpoint-every", "5", "--eval-every", "0", "--eval-windows", "1"}
		if outB, err := exec.Command(bin, resumeArgs...).CombinedOutput(); err != nil {
			t.Fatalf("trial %d: resume: %v\n%s", trial, err, outB)
		}
		step, hash := finalStateHash(t, out)
		if step != steps || hash != refHash {
			t.Fatalf("trial %d: killed at step %d, resumed from %d: final step %d sha256 %s; uninterrupted %s", trial, killAt, resumedFrom, step, hash, refHash)
		}
		t.Logf("trial %d: SIGKILL at step %d, resumed from checkpoint %d: final state sha256 %s… equals the uninterrupted run", trial, killAt, resumedFrom, hash[:16])
		trial++
	}
	return refHash
}

// TestCorruptCheckpointFallsBack damages the newest checkpoint three ways;
// resuming detects it, says so, falls back to the previous committed one,
// and still ends bit-identical to the uninterrupted run.
func TestCorruptCheckpointFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; run without -short")
	}
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "tiny.yaml")
	if err := os.WriteFile(cfgPath, []byte(killTestConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := filepath.Abs("../../data/tinyshakespeare.txt")
	train := func(out string, steps int, extra ...string) string {
		a := append([]string{"train", "--data", data, "--out", out, "--checkpoint-every", "5", "--eval-every", "0", "--eval-windows", "1"}, extra...)
		if steps > 0 {
			a = append(a, "--steps", strconv.Itoa(steps))
		}
		b, err := exec.Command(bin, a...).CombinedOutput()
		if err != nil {
			t.Fatalf("modcoord %v: %v\n%s", a, err, b)
		}
		return string(b)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	train(ref, 20, "--config", cfgPath)
	_, refHash := finalStateHash(t, ref)

	shardOf := func(out string, step int) string {
		m, err := filepath.Glob(filepath.Join(out, "train", "step-"+leftPad(step)+"-gen-0", "*.safetensors"))
		if err != nil || len(m) != 1 {
			t.Fatalf("shard of step %d: %v %v", step, m, err)
		}
		return m[0]
	}
	for _, tc := range []struct {
		name   string
		damage func(path string) error
	}{
		{"flipped byte", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)-100] ^= 0x40
			return os.WriteFile(p, b, 0o644)
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 1000) }},
		{"deleted", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			train(out, 20, "--config", cfgPath, "--keep", "5")
			// Pretend the run died at step 20 right after committing step 15's
			// successor: damage step 15, and remove 20 so 15 is the newest.
			if err := os.RemoveAll(filepath.Dir(shardOf(out, 20))); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(shardOf(out, 15)); err != nil {
				t.Fatal(err)
			}
			log := train(out, 0, "--resume", out)
			if !regexp.MustCompile(`(?s)step 15 generation 0 skipped: .*; using step 10 instead`).MatchString(log) {
				t.Fatalf("resume did not report the damaged checkpoint and the fallback:\n%s", log)
			}
			if step, hash := finalStateHash(t, out); step != 20 || hash != refHash {
				t.Fatalf("after falling back: step %d sha256 %s, uninterrupted %s", step, hash, refHash)
			}
		})
	}
}

func leftPad(step int) string {
	s := strconv.Itoa(step)
	for len(s) < 10 {
		s = "0" + s
	}
	return s
}
