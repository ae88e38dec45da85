package allreduce

import (
	"sync"
	"testing"
	"time"
)

func TestMemTransport(t *testing.T) {
	checkGoroutines(t)
	mt := NewMemTransport(8)
	var mu sync.Mutex
	var got []string
	arrived := make(chan struct{}, 10)
	stop, err := mt.Listen("a", func(msg []byte) {
		mu.Lock()
		got = append(got, string(msg))
		mu.Unlock()
		arrived <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte("one")
	if err := mt.Send("a", buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXX") // the transport must have copied
	mt.Send("a", []byte("two"))
	if err := mt.Send("nobody", []byte("lost")); err != nil {
		t.Errorf("send to an inbox without listener: %v (NATS drops these silently)", err)
	}
	if err := mt.Send("a", []byte("too long!")); err == nil {
		t.Error("message over the limit accepted")
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("messages not delivered")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mt.Send("a", []byte("late"))
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("delivered %q, want [one two] in order", got)
	}
}

// TestMemTransportSeveralListeners: every listener of a subject gets its
// own copy of every message, in order; stopping one leaves the others.
func TestMemTransportSeveralListeners(t *testing.T) {
	checkGoroutines(t)
	mt := NewMemTransport(16)
	const listeners = 3
	got := make([]chan []byte, listeners)
	stops := make([]func() error, listeners)
	for i := range got {
		got[i] = make(chan []byte, 10)
		stop, err := mt.Listen("all", func(msg []byte) { got[i] <- msg })
		if err != nil {
			t.Fatal(err)
		}
		stops[i] = stop
	}
	recv := func(i int) string {
		select {
		case m := <-got[i]:
			return string(m)
		case <-time.After(5 * time.Second):
			t.Fatalf("listener %d: nothing delivered", i)
			return ""
		}
	}
	mt.Send("all", []byte("one"))
	mt.Send("all", []byte("two"))
	var first []byte
	for i := range got {
		if a, b := recv(i), recv(i); a != "one" || b != "two" {
			t.Errorf("listener %d got %q, %q; want one, two", i, a, b)
		}
	}
	// Each listener owns its copy.
	mt.Send("all", []byte("mine"))
	first = <-got[0]
	first[0] = 'X'
	if m := recv(1); m != "mine" {
		t.Errorf("listener 1 got %q after listener 0 modified its copy", m)
	}
	recv(2)
	if err := stops[1](); err != nil {
		t.Fatal(err)
	}
	mt.Send("all", []byte("late"))
	if recv(0) != "late" || recv(2) != "late" {
		t.Error("remaining listeners missed a message after another stopped")
	}
	select {
	case m := <-got[1]:
		t.Errorf("stopped listener got %q", m)
	case <-time.After(50 * time.Millisecond):
	}
	for _, stop := range stops {
		stop()
	}
}
