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
	if _, err := mt.Listen("a", func([]byte) {}); err == nil {
		t.Error("second listener on one inbox accepted")
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
