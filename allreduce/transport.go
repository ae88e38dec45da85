package allreduce

// Transport moves opaque messages to named inboxes, at most once and in
// order per sender, like NATS core: a message to an inbox nobody listens
// on is lost, and one with several listeners reaches each of them (the
// fan-out all-gather's broadcast subject has every rank listening; a
// sender may or may not hear its own message). The Ring builds inbox
// names (InboxSubject, GatherSubject) and copes with loss by its
// deadline. Implementations must be safe for concurrent use.
type Transport interface {
	// Send delivers msg to inbox. It does not wait for the receiver, and
	// the transport is done with msg when Send returns, so the caller may
	// reuse it.
	Send(inbox string, msg []byte) error
	// Listen calls handle with every message sent to inbox, one at a time,
	// until stop is called. When Listen returns, messages sent to inbox
	// from then on are sure to reach handle. After stop returns, handle is
	// not running and will not be called again. handle owns msg (it may
	// keep or modify it).
	Listen(inbox string, handle func(msg []byte)) (stop func() error, err error)
	// MaxMessage is the largest message Send accepts, in bytes.
	MaxMessage() int
}

// InboxSubject is the inbox of one rank of one job generation:
// modcoord.<job>.g<generation>.ring.<rank>. Scoping by job lets NATS
// permissions fence jobs apart; scoping by generation means a restarted
// job never hears the previous generation's ring.
func InboxSubject(job string, generation uint64, rank int) string {
	return "modcoord." + job + ".g" + uitoa(generation) + ".ring." + uitoa(uint64(rank))
}

// GatherSubject is the broadcast subject of one job generation,
// modcoord.<job>.g<generation>.gather: every rank subscribes to it, and
// the fan-out all-gather publishes each owner's chunks there once.
func GatherSubject(job string, generation uint64) string {
	return "modcoord." + job + ".g" + uitoa(generation) + ".gather"
}

func uitoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
